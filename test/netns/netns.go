// Package netns builds small networks of Linux network namespaces for
// end-to-end tests: hosts with their own addresses, joined pairwise by veth
// links that a test can cut, plus a management bridge to the test's own
// namespace where shared servers (DNS, HTTP) run.
//
// Pairwise links rather than one bridge for the overlay: a cut between two
// hosts must leave both reachable from a third, which a shared bridge
// cannot do without a packet filter.
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Lab is a set of hosts. Host i (1-based) has address 10.77.<pair>.<i> on
// its link to each other host (inside the namespaces, so labs never clash)
// and 10.78.<lab>.<i+1> on the management bridge, whose own side, in the
// test's namespace, is Gateway (10.78.<lab>.1): every lab alive at once on
// the machine gets its own <lab>.
type Lab struct {
	t       testing.TB
	prefix  string
	subnet  int
	Gateway string
	Hosts   []*Host
}

// Host is one network namespace.
type Host struct {
	lab   *Lab
	Index int
	NS    string
	// Mgmt is the host's address on the management bridge.
	Mgmt string
}

// Available says why namespaces cannot be made here, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the ip command (iproute2) is not installed")
	}
	name := "mhprobe" + randomHex(3)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	exec.Command("ip", "netns", "del", name).Run()
	return nil
}

// New makes n hosts, fully meshed, and removes them when the test ends.
// It skips the test, saying why, where namespaces cannot be made.
func New(t testing.TB, n int) *Lab {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("skipping: cannot make network namespaces here: %v", err)
	}
	l := &Lab{t: t, prefix: "mh" + randomHex(2)}
	t.Cleanup(l.destroy)
	unlock := lockLabs(t)
	defer unlock()
	l.subnet = freeSubnet(t)
	l.Gateway = fmt.Sprintf("10.78.%d.1", l.subnet)
	bridge := l.prefix + "br"
	l.run("ip", "link", "add", bridge, "type", "bridge")
	l.run("ip", "addr", "add", l.Gateway+"/24", "dev", bridge)
	l.run("ip", "link", "set", bridge, "up")
	for i := 1; i <= n; i++ {
		h := &Host{lab: l, Index: i, NS: fmt.Sprintf("%s-h%d", l.prefix, i), Mgmt: fmt.Sprintf("10.78.%d.%d", l.subnet, i+1)}
		l.Hosts = append(l.Hosts, h)
		l.run("ip", "netns", "add", h.NS)
		l.run("ip", "-n", h.NS, "link", "set", "lo", "up")
		outer, inner := fmt.Sprintf("%sm%d", l.prefix, i), fmt.Sprintf("%sm%di", l.prefix, i)
		l.run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
		l.run("ip", "link", "set", inner, "netns", h.NS)
		l.run("ip", "link", "set", outer, "master", bridge)
		l.run("ip", "link", "set", outer, "up")
		l.run("ip", "-n", h.NS, "addr", "add", h.Mgmt+"/24", "dev", inner)
		l.run("ip", "-n", h.NS, "link", "set", inner, "up")
	}
	for i := 1; i <= n; i++ {
		for j := i + 1; j <= n; j++ {
			a, b := l.Hosts[i-1], l.Hosts[j-1]
			ea, eb := l.linkDev(i, j), l.linkDev(j, i)
			l.run("ip", "link", "add", ea, "type", "veth", "peer", "name", eb)
			l.run("ip", "link", "set", ea, "netns", a.NS)
			l.run("ip", "link", "set", eb, "netns", b.NS)
			l.run("ip", "-n", a.NS, "addr", "add", a.LinkAddr(j)+"/24", "dev", ea)
			l.run("ip", "-n", b.NS, "addr", "add", b.LinkAddr(i)+"/24", "dev", eb)
			l.run("ip", "-n", a.NS, "link", "set", ea, "up")
			l.run("ip", "-n", b.NS, "link", "set", eb, "up")
		}
	}
	return l
}

func (l *Lab) linkDev(from, to int) string { return fmt.Sprintf("%sl%d%d", l.prefix, from, to) }

// LinkAddr is h's address on its link to host other.
func (h *Host) LinkAddr(other int) string {
	lo, hi := min(h.Index, other), max(h.Index, other)
	return fmt.Sprintf("10.77.%d.%d", lo*10+hi, h.Index)
}

// Cut takes the link between hosts a and b down (both ends).
func (l *Lab) Cut(a, b int) {
	l.run("ip", "-n", l.Hosts[a-1].NS, "link", "set", l.linkDev(a, b), "down")
	l.run("ip", "-n", l.Hosts[b-1].NS, "link", "set", l.linkDev(b, a), "down")
}

// Mend brings the link between hosts a and b back up.
func (l *Lab) Mend(a, b int) {
	l.run("ip", "-n", l.Hosts[a-1].NS, "link", "set", l.linkDev(a, b), "up")
	l.run("ip", "-n", l.Hosts[b-1].NS, "link", "set", l.linkDev(b, a), "up")
}

// Command prepares name args to run inside the host's namespace.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

func (l *Lab) run(args ...string) {
	l.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

func (l *Lab) destroy() {
	for _, h := range l.Hosts {
		exec.Command("ip", "netns", "del", h.NS).Run()
	}
	exec.Command("ip", "link", "del", l.prefix+"br").Run()
}

// lockLabs serialises making labs across test processes (go test runs
// packages in parallel), so that two labs never pick the same subnet.
func lockLabs(t testing.TB) func() {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "microhost-netns.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}

// freeSubnet picks a 10.78.<n>.0/24 that no interface here uses.
func freeSubnet(t testing.TB) int {
	used := map[int]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok {
			if v4 := ip.IP.To4(); v4 != nil && v4[0] == 10 && v4[1] == 78 {
				used[int(v4[2])] = true
			}
		}
	}
	for n := 1; n < 255; n++ {
		if !used[n] {
			return n
		}
	}
	t.Fatal("no free 10.78.x.0/24 subnet for a management bridge")
	return 0
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
