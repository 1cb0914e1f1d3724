package resolverdns

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/microhost/microhost/sdk"
	"github.com/miekg/dns"
)

const defaultTimeout = 2 * time.Second

var schema = sdk.Schema{Attributes: []sdk.Attribute{
	{Name: "name", Type: sdk.TypeString, Required: true,
		Description: "DNS name to query: an SRV name when it starts with '_' (e.g. _micro._udp.example.com), otherwise a name with A/AAAA records"},
	{Name: "port", Type: sdk.TypeNumber,
		Description: "port of the peers found through A/AAAA records (required for them, ignored for SRV)"},
	{Name: "server", Type: sdk.TypeString, Default: "the first nameserver in /etc/resolv.conf",
		Description: "DNS server as host:port (port 53 when omitted)"},
	{Name: "timeout", Type: sdk.TypeDuration, Default: defaultTimeout.String(),
		Description: "how long to wait for each answer"},
}}

// rawConfig is the config block as it arrives; pointers tell absent from zero.
type rawConfig struct {
	Name    *string  `json:"name"`
	Port    *float64 `json:"port"`
	Server  *string  `json:"server"`
	Timeout *string  `json:"timeout"`
}

// config is a validated configuration.
type config struct {
	name    string // fully qualified
	srv     bool
	port    int      // for A/AAAA
	servers []string // host:port, tried in order
	timeout time.Duration
}

// parseConfig validates raw; resolvConf supplies the default servers.
func parseConfig(raw json.RawMessage, resolvConf string) (*config, sdk.Diagnostics) {
	var rc rawConfig
	if diags := sdk.DecodeConfig(raw, &rc); diags.HasErrors() {
		return nil, diags
	}
	var diags sdk.Diagnostics
	cfg := &config{timeout: defaultTimeout}

	switch {
	case rc.Name == nil || *rc.Name == "":
		diags = append(diags, sdk.Errorf("name", "missing DNS name", "set name to the SRV or A/AAAA name listing the network's nodes"))
	default:
		if _, ok := dns.IsDomainName(*rc.Name); !ok {
			diags = append(diags, sdk.Errorf("name", "invalid DNS name", "%q is not a valid domain name", *rc.Name))
		}
		cfg.name = dns.Fqdn(*rc.Name)
		cfg.srv = strings.HasPrefix(*rc.Name, "_")
	}

	switch {
	case rc.Port == nil:
		if !cfg.srv && cfg.name != "" {
			diags = append(diags, sdk.Errorf("port", "missing port", "%s is queried for A/AAAA records, which carry no port: set port", cfg.name))
		}
	case cfg.srv:
		diags = append(diags, sdk.Diagnostic{Severity: sdk.SeverityWarning, Attribute: "port",
			Summary: "port is ignored", Detail: fmt.Sprintf("%s is an SRV name; its records carry the ports", cfg.name)})
	default:
		p := *rc.Port
		if p != math.Trunc(p) || p < 1 || p > 65535 {
			diags = append(diags, sdk.Errorf("port", "invalid port", "%v is not a port number between 1 and 65535", p))
		}
		cfg.port = int(p)
	}

	if rc.Server != nil && *rc.Server != "" {
		server, err := normalizeServer(*rc.Server)
		if err != nil {
			diags = append(diags, sdk.Errorf("server", "invalid DNS server", "%v", err))
		}
		cfg.servers = []string{server}
	} else {
		cc, err := dns.ClientConfigFromFile(resolvConf)
		switch {
		case err != nil:
			diags = append(diags, sdk.Errorf("server", "no DNS server", "server is not set and %v", err))
		case len(cc.Servers) == 0:
			diags = append(diags, sdk.Errorf("server", "no DNS server", "server is not set and %s lists no nameserver", resolvConf))
		default:
			for _, s := range cc.Servers {
				cfg.servers = append(cfg.servers, net.JoinHostPort(s, cc.Port))
			}
		}
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
	if diags.HasErrors() {
		return nil, diags
	}
	return cfg, diags
}

// normalizeServer checks a server address and adds port 53 when it has none.
func normalizeServer(s string) (string, error) {
	if ip := net.ParseIP(s); ip != nil {
		return net.JoinHostPort(s, "53"), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if !strings.Contains(s, ":") {
			host, port = s, "53"
		} else {
			return "", fmt.Errorf("%q is not host:port: %v", s, err)
		}
	}
	if host == "" {
		return "", fmt.Errorf("%q has no host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %q is not a number between 1 and 65535", s, port)
	}
	return net.JoinHostPort(host, port), nil
}
