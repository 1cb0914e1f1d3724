package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/sdk"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
)

// decoder evaluates attributes and collects every diagnostic instead of
// stopping at the first.
type decoder struct {
	ctx   *hcl.EvalContext
	dir   string // relative paths are resolved against it
	diags hcl.Diagnostics
}

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng.Ptr(),
	})
}

// value evaluates attr and converts it to ty. ok is false when there is
// nothing to use: an error (already reported), a null (meaning "unset"), or
// an unknown value left by a variable that failed to decode.
func (d *decoder) value(attr *hcl.Attribute, ty cty.Type) (cty.Value, bool) {
	return sdk.EvalAttribute(attr, ty, d.ctx, &d.diags)
}

func (d *decoder) str(attr *hcl.Attribute) (string, bool) {
	v, ok := d.value(attr, cty.String)
	if !ok {
		return "", false
	}
	return v.AsString(), true
}

func (d *decoder) boolean(attr *hcl.Attribute) (bool, bool) {
	v, ok := d.value(attr, cty.Bool)
	if !ok {
		return false, false
	}
	return v.True(), true
}

func (d *decoder) strList(attr *hcl.Attribute) ([]string, bool) {
	v, ok := d.value(attr, cty.List(cty.String))
	if !ok {
		return nil, false
	}
	var out []string
	if err := gocty.FromCtyValue(v, &out); err != nil {
		d.errorf(attr.Expr.Range(), "Invalid attribute value", "%s", err)
		return nil, false
	}
	return out, true
}

func (d *decoder) strMap(attr *hcl.Attribute) (map[string]string, bool) {
	v, ok := d.value(attr, cty.Map(cty.String))
	if !ok {
		return nil, false
	}
	var out map[string]string
	if err := gocty.FromCtyValue(v, &out); err != nil {
		d.errorf(attr.Expr.Range(), "Invalid attribute value", "%s", err)
		return nil, false
	}
	return out, true
}

// duration decodes a positive duration written as a string such as "30s".
func (d *decoder) duration(attr *hcl.Attribute) (time.Duration, bool) {
	s, ok := d.str(attr)
	if !ok {
		return 0, false
	}
	dur, err := sdk.ParseDuration(s)
	if err != nil {
		d.errorf(attr.Expr.Range(), "Invalid duration", "%s.", err)
		return 0, false
	}
	if dur <= 0 {
		d.errorf(attr.Expr.Range(), "Invalid duration", "The duration %q must be greater than zero.", s)
		return 0, false
	}
	return dur, true
}

// path resolves a file path against the configuration's directory.
func (d *decoder) path(attr *hcl.Attribute) (string, bool) {
	p, ok := d.str(attr)
	if !ok {
		return "", false
	}
	if p == "" {
		d.errorf(attr.Expr.Range(), "Invalid path", "The path in %q must not be empty.", attr.Name)
		return "", false
	}
	return d.resolve(p), true
}

func (d *decoder) resolve(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(d.dir, p)
}

// addrRule says what a HOST:PORT address may leave out.
type addrRule struct {
	hostOptional bool // ":8085" means every interface
	portZeroOK   bool // port 0 picks a free port
}

var (
	bindAddr = addrRule{hostOptional: true, portZeroOK: true} // addresses we listen on
	dialAddr = addrRule{}                                     // addresses we connect to
)

// hostPort checks a HOST:PORT address and reports what is wrong with it.
func (d *decoder) hostPort(rng hcl.Range, what, addr string, rule addrRule) bool {
	if err := checkHostPort(addr, rule); err != nil {
		d.errorf(rng, "Invalid address", "%s %q is not a valid HOST:PORT address: %s.", what, addr, err)
		return false
	}
	return true
}

func checkHostPort(addr string, rule addrRule) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var addrErr *net.AddrError
		if errors.As(err, &addrErr) {
			return errors.New(addrErr.Err)
		}
		return err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if n == 0 && !rule.portZeroOK {
		return errors.New("port 0 cannot be connected to")
	}
	if host == "" {
		if !rule.hostOptional {
			return errors.New("the host is missing")
		}
		return nil
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() && !rule.hostOptional {
			return fmt.Errorf("%s is not an address that can be connected to", host)
		}
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// maxUnixPath is the longest unix socket path Linux accepts (sun_path
// holds 108 bytes including the terminating NUL).
const maxUnixPath = 107

// endpoint checks an address that is either HOST:PORT or unix:/path and
// returns it with a relative socket path resolved.
func (d *decoder) endpoint(attr *hcl.Attribute, value string, rule addrRule) (string, bool) {
	if p, ok := strings.CutPrefix(value, "unix:"); ok {
		return d.unixEndpoint(attr.Expr.Range(), p)
	}
	return value, d.hostPort(attr.Expr.Range(), attr.Name, value, rule)
}

func (d *decoder) unixEndpoint(rng hcl.Range, p string) (string, bool) {
	if p == "" {
		d.errorf(rng, "Invalid address", "A unix socket address needs a path, such as \"unix:/run/microhost/admin.sock\".")
		return "", false
	}
	p = d.resolve(p)
	if len(p) > maxUnixPath {
		d.errorf(rng, "Invalid address", "The unix socket path %q is %d bytes long; the limit is %d. Choose a shorter path.", p, len(p), maxUnixPath)
		return "", false
	}
	return "unix:" + p, true
}
