package resolverhttp

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"time"

	"github.com/microhost/microhost/sdk"
)

const (
	defaultTimeout = 5 * time.Second
	defaultMaxBody = 1 << 20
)

var schema = sdk.Schema{Attributes: []sdk.Attribute{
	{Name: "url", Type: sdk.TypeString, Required: true,
		Description: `http(s) URL answering GET URL?name=<network> with {"nodes":[{"address":"host:port","priority":N}]}`},
	{Name: "timeout", Type: sdk.TypeDuration, Default: defaultTimeout.String(),
		Description: "limit on the whole request, body included"},
	{Name: "max_body", Type: sdk.TypeNumber, Default: "1048576",
		Description: "largest answer accepted, in bytes"},
	{Name: "ca", Type: sdk.TypePath,
		Description: "PEM file of the CA certificates trusted for an https url (default: the system's)"},
	{Name: "insecure_skip_verify", Type: sdk.TypeBool, Default: "false",
		Description: "accept any server certificate (testing only)"},
}}

// rawConfig is the config block as it arrives; pointers tell absent from zero.
type rawConfig struct {
	URL                *string  `json:"url"`
	Timeout            *string  `json:"timeout"`
	MaxBody            *float64 `json:"max_body"`
	CA                 *string  `json:"ca"`
	InsecureSkipVerify *bool    `json:"insecure_skip_verify"`
}

// config is a validated configuration.
type config struct {
	url                *url.URL
	timeout            time.Duration
	maxBody            int64
	roots              *x509.CertPool // nil: the system's
	insecureSkipVerify bool
}

func parseConfig(raw json.RawMessage) (*config, sdk.Diagnostics) {
	var rc rawConfig
	if diags := sdk.DecodeConfig(raw, &rc); diags.HasErrors() {
		return nil, diags
	}
	var diags sdk.Diagnostics
	cfg := &config{timeout: defaultTimeout, maxBody: defaultMaxBody}

	if rc.URL == nil || *rc.URL == "" {
		diags = append(diags, sdk.Errorf("url", "missing URL", "set url to the http(s) endpoint that lists the network's nodes"))
	} else if u, err := parseURL(*rc.URL); err != nil {
		diags = append(diags, sdk.Errorf("url", "invalid URL", "%v", err))
	} else {
		cfg.url = u
	}

	if rc.Timeout != nil {
		d, err := time.ParseDuration(*rc.Timeout)
		switch {
		case err != nil:
			diags = append(diags, sdk.Errorf("timeout", "invalid duration", "%v", err))
		case d <= 0:
			diags = append(diags, sdk.Errorf("timeout", "invalid duration", "timeout must be positive, got %v", d))
		default:
			cfg.timeout = d
		}
	}

	if rc.MaxBody != nil {
		n := *rc.MaxBody
		if n != math.Trunc(n) || n < 1 || n > math.MaxInt32 {
			diags = append(diags, sdk.Errorf("max_body", "invalid size", "max_body must be a whole number of bytes between 1 and %d, got %v", math.MaxInt32, n))
		} else {
			cfg.maxBody = int64(n)
		}
	}

	if rc.CA != nil && *rc.CA != "" {
		pool, err := loadCA(*rc.CA)
		if err != nil {
			diags = append(diags, sdk.Errorf("ca", "unusable CA file", "%v", err))
		}
		cfg.roots = pool
	}
	if rc.InsecureSkipVerify != nil && *rc.InsecureSkipVerify {
		cfg.insecureSkipVerify = true
		diags = append(diags, sdk.Diagnostic{Severity: sdk.SeverityWarning, Attribute: "insecure_skip_verify",
			Summary: "TLS verification is off", Detail: "anyone on the path can answer with their own peer list"})
	}
	if cfg.url != nil && cfg.url.Scheme == "http" && (cfg.roots != nil || cfg.insecureSkipVerify) {
		diags = append(diags, sdk.Diagnostic{Severity: sdk.SeverityWarning, Attribute: "url",
			Summary: "TLS settings unused", Detail: "ca and insecure_skip_verify apply to https URLs only"})
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return cfg, diags
}

func parseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if u.Query().Has("name") {
		return nil, fmt.Errorf("%q already has a name parameter; the resolver sets it to the network name", s)
	}
	return u, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
