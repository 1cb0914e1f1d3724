package testserver

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NginxConfig describes what an nginx instance serves.
type NginxConfig struct {
	// Root is the directory of static files served at "/"; .json files are
	// served as application/json.
	Root string
	// Server holds extra directives for the server block, e.g.
	// "location = /fail { return 500; }".
	Server string
	// TLSCert and TLSKey (PEM files) switch the listener to HTTPS.
	TLSCert, TLSKey string
}

// Nginx is a running nginx.
type Nginx struct {
	url string
}

// StartNginx runs nginx on 127.0.0.1 at a free port until the test ends.
func StartNginx(t testing.TB, cfg NginxConfig) *Nginx {
	t.Helper()
	bin := Binary(t, "nginx", "nginx-light")
	dir := t.TempDir()
	for _, sub := range []string{"logs", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	confPath := filepath.Join(dir, "nginx.conf")
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	args := func(port int) []string {
		if err := os.WriteFile(confPath, []byte(nginxConf(dir, port, cfg)), 0o644); err != nil {
			t.Fatal(err)
		}
		// -e: nginx opens its error log before reading the config; the
		// default path may not be writable.
		return []string{"-p", dir, "-c", confPath, "-e", "stderr", "-g", "daemon off;"}
	}
	ready := func(port int) error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	_, port := runServer(t, "nginx", bin, filepath.Join(dir, "nginx.log"), args, ready)
	return &Nginx{url: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)}
}

// URL is the server's base URL, without a trailing slash.
func (n *Nginx) URL() string { return n.url }

func nginxConf(dir string, port int, cfg NginxConfig) string {
	var b strings.Builder
	if os.Geteuid() == 0 {
		// Workers would otherwise run as nobody and could not read the
		// test's private temp dir.
		b.WriteString("user root;\n")
	}
	fmt.Fprintf(&b, "worker_processes 1;\npid %s;\nerror_log stderr warn;\n", filepath.Join(dir, "nginx.pid"))
	b.WriteString("events { worker_connections 64; }\n")
	b.WriteString("http {\n  access_log off;\n")
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "  %s_temp_path %s;\n", kind, filepath.Join(dir, "tmp", kind))
	}
	b.WriteString("  types { application/json json; text/plain txt; }\n  default_type application/octet-stream;\n")
	b.WriteString("  server {\n")
	if cfg.TLSCert != "" {
		fmt.Fprintf(&b, "    listen 127.0.0.1:%d ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n", port, cfg.TLSCert, cfg.TLSKey)
	} else {
		fmt.Fprintf(&b, "    listen 127.0.0.1:%d;\n", port)
	}
	fmt.Fprintf(&b, "    root %s;\n", cfg.Root)
	if cfg.Server != "" {
		b.WriteString("    " + cfg.Server + "\n")
	}
	b.WriteString("  }\n}\n")
	return b.String()
}
