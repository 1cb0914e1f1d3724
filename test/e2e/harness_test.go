// Package e2e runs microhost as a user would: the real binary, real plugin
// processes, real sockets; some tests across Linux network namespaces.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	microhost    string // the binary under test
	resolverFile string // the examples/ third-party plugin
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mh-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	certDir = filepath.Join(dir, "certs")
	microhost = filepath.Join(dir, "microhost")
	resolverFile = filepath.Join(dir, "resolver-file")
	for bin, pkg := range map[string]string{microhost: "../../cmd/microhost", resolverFile: "../../examples/resolver-file"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a `microhost run` process.
type node struct {
	t     *testing.T
	name  string
	dir   string
	admin string
	cmd   *exec.Cmd
	log   *os.File
	wrap  []string // see nodeSpec.Wrap
	cfg   string   // path of the config file
}

// nodeSpec describes a node's config; Extra is appended verbatim.
type nodeSpec struct {
	ID      string
	Listen  string // UDP host:port
	Peers   []string
	Proxy   string // TCP host:port, "" for none
	Extra   string
	Network string
	// Tunnel holds extra lines for the tunnel's config block.
	Tunnel string
	// MinPeers sets node { min_peers }.
	MinPeers int
	// Wrap runs the node through another command, e.g. `ip netns exec NS`.
	Wrap []string
}

func (s nodeSpec) config(dir string) string {
	network := s.Network
	if network == "" {
		network = "e2e"
	}
	var peers []string
	for _, p := range s.Peers {
		peers = append(peers, strconv.Quote(p))
	}
	proxy := ""
	if s.Proxy != "" {
		proxy = fmt.Sprintf("proxy \"rpc\" {\n  config {\n    listen = %q\n  }\n}\n", s.Proxy)
	}
	return fmt.Sprintf(`node {
  id       = %q
  network  = %q
  listen   = %q
  admin    = %q
  peers    = [%s]
  min_peers = %d
  data_dir = %q
}
tls {
  ca   = %q
  cert = %q
  key  = %q
}
tunnel "quic" {
  config {
    keepalive_interval = "300ms"
%s  }
}
router "memory" {
  config {
    flush_interval = "50ms"
  }
}
%s%s`, s.ID, network, s.Listen, "unix:"+filepath.Join(dir, "admin.sock"), strings.Join(peers, ", "), s.MinPeers, filepath.Join(dir, "data"),
		filepath.Join(certDir, "ca.pem"), filepath.Join(certDir, s.ID+".pem"), filepath.Join(certDir, s.ID+"-key.pem"), s.Tunnel, proxy, s.Extra)
}

// certDir holds the test network's CA and node certificates, made once.
var (
	certDir string
	caOnce  sync.Once
)

func issueCerts(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		issueCert(t, id, "--ip", "127.0.0.1")
	}
}

// issueCert issues certificate id, with extra `ca issue` flags, unless it
// exists already.
func issueCert(t *testing.T, id string, flags ...string) {
	t.Helper()
	caOnce.Do(func() { run(t, microhost, "ca", "init", "--dir", certDir) })
	if _, err := os.Stat(filepath.Join(certDir, id+".pem")); err == nil {
		return
	}
	run(t, microhost, append([]string{"ca", "issue", "--dir", certDir, "--id", id}, flags...)...)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startNode writes the node's config and runs it until the test ends.
func startNode(t *testing.T, spec nodeSpec) *node {
	t.Helper()
	issueCerts(t, spec.ID)
	dir, err := os.MkdirTemp("", "mh-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "node.hcl")
	if err := os.WriteFile(cfg, []byte(spec.config(dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, name: spec.ID, dir: dir, admin: "unix:" + filepath.Join(dir, "admin.sock"), wrap: spec.Wrap, cfg: cfg}
	t.Cleanup(n.stop)
	n.start()
	return n
}

func (n *node) start() {
	t := n.t
	args := append(append([]string{}, n.wrap...), microhost, "run", "--config", n.cfg, "--log-level", "debug")
	n.cmd = exec.Command(args[0], args[1:]...)
	log, err := os.OpenFile(filepath.Join(n.dir, "node.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n.log = log
	n.cmd.Stdout, n.cmd.Stderr = log, log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.waitReady()
}

// waitReady waits until the admin API answers.
func (n *node) waitReady() {
	n.t.Helper()
	waitFor(n.t, 30*time.Second, n.name+" admin API up", func() bool {
		_, err := n.cliErr("network", "nodes")
		return err == nil
	})
}

// stop stops the node gracefully (SIGTERM) and prints its log if the test failed.
func (n *node) stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	if n.cmd.ProcessState == nil {
		n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	n.log.Close()
	if n.t.Failed() {
		b, _ := os.ReadFile(filepath.Join(n.dir, "node.log"))
		n.t.Logf("log of %s:\n%s", n.name, tail(string(b), 200))
	}
}

// kill ends the node with SIGKILL, as a crash would.
func (n *node) kill() {
	n.cmd.Process.Kill()
	n.cmd.Wait()
	n.log.Close()
}

// restart runs a killed or stopped node again with the same config; its
// log goes on in the same file.
func (n *node) restart() {
	n.t.Helper()
	n.start()
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func (n *node) cliErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, microhost, append(args, "--admin", n.admin)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (n *node) cli(args ...string) string {
	n.t.Helper()
	out, err := n.cliErr(args...)
	if err != nil {
		n.t.Fatalf("microhost %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// children lists the pids whose parent is pid.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

func alive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// A zombie has exited; only its parent has not reaped it yet.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func freeUDP(t *testing.T, host string) string {
	t.Helper()
	c, err := net.ListenPacket("udp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func freeTCP(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
