package testserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// SRV is one SRV record.
type SRV struct {
	Name     string // e.g. "_micro._udp.example.test"
	Target   string // "" for the RFC 2782 "service not available" record
	Port     int
	Priority int
	Weight   int
}

// Host maps a name to its addresses (IPv4 and/or IPv6).
type Host struct {
	Name  string
	Addrs []string
}

// DnsmasqConfig describes what a dnsmasq instance serves.
type DnsmasqConfig struct {
	// TTL in seconds of every local record.
	TTL int
	// Local domains are answered only from local data: an unknown name in
	// them is NXDOMAIN.
	Local []string
	SRV   []SRV
	// Hosts are served from a hosts file that SetHosts rewrites while
	// dnsmasq runs.
	Hosts []Host
	// Forward sends queries for a domain to an upstream ("127.0.0.1#1");
	// an upstream that never answers makes dnsmasq stay silent too.
	Forward map[string]string
}

// Dnsmasq is a running dnsmasq.
type Dnsmasq struct {
	proc      *process
	addr      string
	hostsPath string
}

// StartDnsmasq runs dnsmasq on 127.0.0.1 at a free port until the test ends.
func StartDnsmasq(t testing.TB, cfg DnsmasqConfig) *Dnsmasq {
	t.Helper()
	bin := Binary(t, "dnsmasq", "dnsmasq")
	dir := t.TempDir()
	d := &Dnsmasq{hostsPath: filepath.Join(dir, "hosts")}
	if err := writeHosts(d.hostsPath, cfg.Hosts); err != nil {
		t.Fatal(err)
	}
	args := func(port int) []string {
		a := []string{
			"--keep-in-foreground",
			"--conf-file=/dev/null",
			"--port=" + strconv.Itoa(port),
			"--listen-address=127.0.0.1",
			"--bind-interfaces",
			"--no-resolv",
			"--no-hosts",
			"--pid-file=",
			"--log-facility=-",
			"--log-queries",
			"--local-ttl=" + strconv.Itoa(cfg.TTL),
			"--addn-hosts=" + d.hostsPath,
		}
		if os.Geteuid() == 0 {
			// The default user (nobody) could not re-read the hosts file in
			// the test's private temp dir on SIGHUP.
			a = append(a, "--user=root")
		}
		for _, l := range cfg.Local {
			a = append(a, "--local=/"+l+"/")
		}
		for _, s := range cfg.SRV {
			if s.Target == "" {
				// A bare name serves target ".": "service not available".
				a = append(a, "--srv-host="+s.Name)
				continue
			}
			a = append(a, fmt.Sprintf("--srv-host=%s,%s,%d,%d,%d", s.Name, s.Target, s.Port, s.Priority, s.Weight))
		}
		for domain, upstream := range cfg.Forward {
			a = append(a, "--server=/"+domain+"/"+upstream)
		}
		return a
	}
	p, port := runServer(t, "dnsmasq", bin, filepath.Join(dir, "dnsmasq.log"), args, dnsAnswers)
	d.proc = p
	d.addr = fmt.Sprintf("127.0.0.1:%d", port)
	return d
}

// Addr is the server's host:port.
func (d *Dnsmasq) Addr() string { return d.addr }

// SetHosts replaces the hosts file and makes dnsmasq re-read it. Answers
// dnsmasq has already given stay in its clients' caches for the TTL.
func (d *Dnsmasq) SetHosts(t testing.TB, hosts []Host) {
	t.Helper()
	if err := writeHosts(d.hostsPath, hosts); err != nil {
		t.Fatal(err)
	}
	if err := d.proc.signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

func writeHosts(path string, hosts []Host) error {
	var b strings.Builder
	for _, h := range hosts {
		for _, a := range h.Addrs {
			fmt.Fprintf(&b, "%s %s\n", a, h.Name)
		}
	}
	// Write and rename so dnsmasq never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// UnboundConfig describes what an unbound instance serves.
type UnboundConfig struct {
	// LocalData are resource records in zone-file syntax, e.g.
	// "a.example.test. 2 IN A 10.0.0.1".
	LocalData []string
	// StaticZones answer only from LocalData (unknown names are NXDOMAIN).
	StaticZones []string
	// ServfailZones are forwarded over TCP to a closed port, so unbound
	// answers SERVFAIL for every name in them at once.
	ServfailZones []string
}

// Unbound is a running unbound.
type Unbound struct {
	addr string
}

// StartUnbound runs unbound on 127.0.0.1 at a free port until the test ends.
func StartUnbound(t testing.TB, cfg UnboundConfig) *Unbound {
	t.Helper()
	bin := Binary(t, "unbound", "unbound")
	dir := t.TempDir()
	closedPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "unbound.conf")
	args := func(port int) []string {
		var b strings.Builder
		fmt.Fprintf(&b, "server:\n")
		fmt.Fprintf(&b, "  interface: 127.0.0.1\n  port: %d\n", port)
		fmt.Fprintf(&b, "  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: %q\n", dir)
		fmt.Fprintf(&b, "  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n")
		fmt.Fprintf(&b, "  do-ip6: no\n  do-not-query-localhost: no\n  module-config: \"iterator\"\n")
		fmt.Fprintf(&b, "  access-control: 127.0.0.0/8 allow\n")
		for _, z := range cfg.StaticZones {
			fmt.Fprintf(&b, "  local-zone: %q static\n", dns.Fqdn(z))
		}
		for _, rr := range cfg.LocalData {
			fmt.Fprintf(&b, "  local-data: %q\n", rr)
		}
		for _, z := range cfg.ServfailZones {
			fmt.Fprintf(&b, "forward-zone:\n  name: %q\n  forward-tcp-upstream: yes\n  forward-addr: 127.0.0.1@%d\n", dns.Fqdn(z), closedPort)
		}
		if err := os.WriteFile(confPath, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return []string{"-d", "-c", confPath}
	}
	_, port := runServer(t, "unbound", bin, filepath.Join(dir, "unbound.log"), args, dnsAnswers)
	return &Unbound{addr: fmt.Sprintf("127.0.0.1:%d", port)}
}

// Addr is the server's host:port.
func (u *Unbound) Addr() string { return u.addr }

// dnsAnswers reports whether a DNS server answers on the port, whatever
// its answer.
func dnsAnswers(port int) error {
	m := new(dns.Msg)
	m.SetQuestion("ready.invalid.", dns.TypeA)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	_, _, err := c.Exchange(m, fmt.Sprintf("127.0.0.1:%d", port))
	return err
}
