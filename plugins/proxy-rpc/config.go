package proxyrpc

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math"

	"github.com/microhost/microhost/plugins/proxy-rpc/forward"
	"github.com/microhost/microhost/sdk"
)

// Defaults of the config { } block.
const (
	DefaultListen         = "127.0.0.1:9090"
	DefaultMaxMessageSize = 64 << 20
	// DefaultMaxConcurrentStreams bounds the calls one connection (a
	// client's, or another proxy's over the tunnel) has in flight; further
	// calls wait at the caller (HTTP/2 flow control) instead of piling up
	// in this proxy's memory.
	DefaultMaxConcurrentStreams = 1024
)

// Config is the proxy's config { } block.
type Config struct {
	Listen         string       `json:"listen"`
	TLSCert        string       `json:"tls_cert"`
	TLSKey         string       `json:"tls_key"`
	MaxMessageSize *json.Number `json:"max_message_size"`
	MaxHops        *json.Number `json:"max_hops"`
	MaxStreams     *json.Number `json:"max_concurrent_streams"`
}

// settings is a validated Config with defaults applied.
type settings struct {
	listen         string
	tls            *tls.Config // nil for plaintext (h2c)
	maxMessageSize int
	maxHops        int
	maxStreams     int
}

func schema() sdk.Schema {
	return sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "listen", Type: sdk.TypeString, Default: DefaultListen, Description: "host:port gRPC clients connect to"},
		{Name: "tls_cert", Type: sdk.TypePath, Description: "PEM certificate file; with tls_key, serve clients over TLS instead of plaintext"},
		{Name: "tls_key", Type: sdk.TypePath, Description: "PEM private key file of tls_cert"},
		{Name: "max_message_size", Type: sdk.TypeNumber, Default: fmt.Sprint(DefaultMaxMessageSize), Description: "largest message in bytes the proxy receives or sends"},
		{Name: "max_hops", Type: sdk.TypeNumber, Default: fmt.Sprint(forward.DefaultMaxHops), Description: "most nodes a call may be forwarded through; stops routing loops"},
		{Name: "max_concurrent_streams", Type: sdk.TypeNumber, Default: fmt.Sprint(DefaultMaxConcurrentStreams), Description: "most calls one connection (a client's, or another proxy's over the tunnel) may have in flight; more wait at the caller"},
	}}
}

// parseConfig validates the request's config block, reporting every
// problem against the attribute it is about.
func parseConfig(req sdk.ConfigureRequest) (settings, sdk.Diagnostics) {
	var c Config
	if diags := req.Decode(&c); diags.HasErrors() {
		return settings{}, diags
	}
	s := settings{listen: c.Listen, maxMessageSize: DefaultMaxMessageSize, maxHops: forward.DefaultMaxHops, maxStreams: DefaultMaxConcurrentStreams}
	var diags sdk.Diagnostics
	if s.listen == "" {
		s.listen = DefaultListen
	}
	if c.MaxMessageSize != nil {
		n, err := positiveInt(*c.MaxMessageSize, math.MaxInt32)
		if err != nil {
			diags = append(diags, sdk.Errorf("max_message_size", "invalid max_message_size", "%v", err))
		}
		s.maxMessageSize = n
	}
	if c.MaxHops != nil {
		n, err := positiveInt(*c.MaxHops, 255)
		if err != nil {
			diags = append(diags, sdk.Errorf("max_hops", "invalid max_hops", "%v", err))
		}
		s.maxHops = n
	}
	if c.MaxStreams != nil {
		n, err := positiveInt(*c.MaxStreams, math.MaxInt32)
		if err != nil {
			diags = append(diags, sdk.Errorf("max_concurrent_streams", "invalid max_concurrent_streams", "%v", err))
		}
		s.maxStreams = n
	}
	switch {
	case c.TLSCert == "" && c.TLSKey == "":
	case c.TLSCert == "":
		diags = append(diags, sdk.Errorf("tls_cert", "tls_cert is missing", "tls_key is set to %q, and TLS needs the certificate too", c.TLSKey))
	case c.TLSKey == "":
		diags = append(diags, sdk.Errorf("tls_key", "tls_key is missing", "tls_cert is set to %q, and TLS needs its private key too", c.TLSCert))
	default:
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			diags = append(diags, sdk.Errorf("tls_cert", "cannot load the TLS certificate", "%s with key %s: %v", c.TLSCert, c.TLSKey, err))
		} else {
			s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
		}
	}
	return s, diags
}

func positiveInt(n json.Number, max int64) (int, error) {
	v, err := n.Int64()
	if err != nil {
		return 0, fmt.Errorf("%s is not a whole number", n)
	}
	if v < 1 || v > max {
		return 0, fmt.Errorf("%d is out of range 1..%d", v, max)
	}
	return int(v), nil
}
