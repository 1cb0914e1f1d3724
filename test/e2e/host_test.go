package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microhost/microhost/sdk"
)

func TestValidateReportsEveryErrorWithItsLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.hcl")
	src := `node {
  network = "e2e"
  listen  = "127.0.0.1:8085"
}
tls {
  insecure = true
}
tunnel "quic" {
  config {
    keepalive_interval = "soon"
  }
}
router "memory" {
  config {
    stratgy = "best"
  }
}
servce "x" {}
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(microhost, "validate", path).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Fatalf("validate exited %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"bad.hcl line 18", // unknown block
		"bad.hcl line 10", // bad duration in a plugin's config
		"bad.hcl line 15", // unknown plugin argument
		`Did you mean "strategy"?`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

type pluginStatus struct {
	Name     string `json:"name"`
	PID      int    `json:"pid"`
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
}

func (n *node) plugins() []pluginStatus {
	n.t.Helper()
	var out []pluginStatus
	if err := json.Unmarshal([]byte(n.cli("plugin", "status", "--json")), &out); err != nil {
		n.t.Fatal(err)
	}
	return out
}

func TestKilledPluginIsRestartedAndReconfigured(t *testing.T) {
	a := startNode(t, nodeSpec{ID: "a", Listen: freeUDP(t, "127.0.0.1")})
	var router pluginStatus
	for _, p := range a.plugins() {
		if p.Name == "router-memory" {
			router = p
		}
	}
	if router.PID == 0 {
		t.Fatalf("no router plugin process: %+v", a.plugins())
	}
	if err := syscall.Kill(router.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "router plugin restarted and healthy", func() bool {
		for _, p := range a.plugins() {
			if p.Name == "router-memory" && p.Restarts == 1 && p.State == "running" && p.PID != router.PID {
				return true
			}
		}
		return false
	})
	// The restarted router got its configuration and the registry back.
	a.cli("service", "register", "svc", "--address", "127.0.0.1:1")
	waitFor(t, 5*time.Second, "the restarted router serves routes", func() bool {
		out, err := a.cliErr("network", "routes", "--service", "svc", "--json")
		return err == nil && strings.Contains(out, "127.0.0.1:1")
	})
}

func TestHostKilledLeavesNoPlugin(t *testing.T) {
	a := startNode(t, nodeSpec{ID: "a", Listen: freeUDP(t, "127.0.0.1")})
	plugins := children(a.cmd.Process.Pid)
	if len(plugins) < 2 {
		t.Fatalf("expected plugin processes under the host, found %v", plugins)
	}
	a.kill()
	waitFor(t, 2*time.Second, fmt.Sprintf("plugins %v to exit after the host was killed", plugins), func() bool {
		for _, pid := range plugins {
			if alive(pid) {
				return false
			}
		}
		return true
	})
}

// A plugin written only against the sdk, loaded by path, finds the peer
// that links the two nodes.
func TestThirdPartyResolverByPath(t *testing.T) {
	bAddr := freeUDP(t, "127.0.0.1")
	b := startNode(t, nodeSpec{ID: "b", Listen: bAddr})
	peers := filepath.Join(t.TempDir(), "peers")
	if err := os.WriteFile(peers, []byte(bAddr+" 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startNode(t, nodeSpec{ID: "a", Listen: freeUDP(t, "127.0.0.1"), Extra: fmt.Sprintf(`
resolver "file" {
  plugin = %q
  config {
    path = %q
  }
}
`, resolverFile, peers)})
	waitFor(t, 15*time.Second, "a links to b, found by the file resolver", func() bool {
		out, err := a.cliErr("network", "connections", "--json")
		return err == nil && strings.Contains(out, `"b"`)
	})
	waitFor(t, 15*time.Second, "b sees a", func() bool {
		out, err := b.cliErr("network", "nodes", "--json")
		return err == nil && strings.Contains(out, `"a"`)
	})
}

// A component running standalone elsewhere is used through address.
func TestStandaloneComponentByAddress(t *testing.T) {
	bAddr := freeUDP(t, "127.0.0.1")
	startNode(t, nodeSpec{ID: "b", Listen: bAddr})
	dir := t.TempDir()
	peers := filepath.Join(dir, "peers")
	if err := os.WriteFile(peers, []byte(bAddr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "resolver.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("config {\n  path = %q\n}\n", peers)), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := freeTCP(t, "127.0.0.1")
	standalone := exec.Command(resolverFile, "serve", "--listen", listen, "--config", cfg)
	if err := standalone.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standalone.Process.Kill(); standalone.Wait() })
	waitFor(t, 10*time.Second, "the standalone resolver listens", func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	a := startNode(t, nodeSpec{ID: "a", Listen: freeUDP(t, "127.0.0.1"), Extra: fmt.Sprintf(`
resolver "file" {
  address = %q
}
`, listen)})
	waitFor(t, 15*time.Second, "a links to b, found by the standalone resolver", func() bool {
		out, err := a.cliErr("network", "connections", "--json")
		return err == nil && strings.Contains(out, `"b"`)
	})
}

// SIGHUP makes the tunnel read its certificate again without dropping links.
func TestSighupReloadsCertificatesWithoutDroppingLinks(t *testing.T) {
	bAddr := freeUDP(t, "127.0.0.1")
	startNode(t, nodeSpec{ID: "b", Listen: bAddr})
	a := startNode(t, nodeSpec{ID: "reloader", Listen: freeUDP(t, "127.0.0.1"), Peers: []string{bAddr}})
	var before sdk.Link
	waitFor(t, 15*time.Second, "reloader links to b", func() bool {
		for _, l := range a.links() {
			if l.Peer == "b" && l.State == sdk.LinkUp {
				before = l
				return true
			}
		}
		return false
	})
	// A new certificate for the same node id, as a renewal would bring.
	for _, f := range []string{"reloader.pem", "reloader-key.pem"} {
		if err := os.Remove(filepath.Join(certDir, f)); err != nil {
			t.Fatal(err)
		}
	}
	run(t, microhost, "ca", "issue", "--dir", certDir, "--id", "reloader", "--ip", "127.0.0.1")
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the tunnel logs the reload", func() bool {
		b, _ := os.ReadFile(filepath.Join(a.dir, "node.log"))
		return strings.Contains(string(b), "certificates reloaded")
	})
	// Plugins with nothing to reload take the signal in their stride.
	for _, p := range a.plugins() {
		if p.Restarts != 0 {
			t.Errorf("plugin %s restarted after SIGHUP: %+v", p.Name, p)
		}
	}
	for _, l := range a.links() {
		if l.Peer == "b" {
			if l.ID != before.ID || l.State != sdk.LinkUp {
				t.Fatalf("the link to b changed on reload: before %+v, after %+v", before, l)
			}
			return
		}
	}
	t.Fatal("the link to b is gone after the reload")
}

// A node with min_peers links to nodes it learns of through its peers'
// graphs, beyond its static peers.
func TestMinPeersLinksToNodesSeenThroughPeers(t *testing.T) {
	aAddr, bAddr := freeUDP(t, "127.0.0.1"), freeUDP(t, "127.0.0.1")
	startNode(t, nodeSpec{ID: "a", Listen: aAddr})
	startNode(t, nodeSpec{ID: "b", Listen: bAddr, Peers: []string{aAddr}})
	c := startNode(t, nodeSpec{ID: "c", Listen: freeUDP(t, "127.0.0.1"), Peers: []string{bAddr}, MinPeers: 2})
	waitFor(t, 20*time.Second, "c links to a, which only b's graph names", func() bool {
		for _, l := range c.links() {
			if l.Peer == "a" && l.State == sdk.LinkUp {
				return true
			}
		}
		return false
	})
}
