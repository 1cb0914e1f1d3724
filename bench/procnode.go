package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microhost/microhost/host/admin"
	"github.com/microhost/microhost/host/builtin"
	"github.com/microhost/microhost/sdk/pki"
)

// microhostBin is the binary node processes run; built once when empty.
// pprofDir, when set, runs every plugin through bench/pprofplugin, which
// serves net/http/pprof and leaves its address in that directory.
var (
	microhostBin string
	pprofDir     string
	buildOnce    sync.Once
	buildDir     string
	buildErr     error
)

// microhostBinary returns the microhost binary, building ./cmd/microhost on first
// use unless -microhost named one.
func microhostBinary() (string, error) {
	buildOnce.Do(func() {
		if microhostBin != "" {
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "mhbench-bin-"); buildErr != nil {
			return
		}
		bin := filepath.Join(buildDir, "microhost")
		fmt.Println("  building ./cmd/microhost")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/microhost").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/microhost (run the bench from the repository root): %v\n%s", err, out)
			return
		}
		microhostBin = bin
	})
	if buildErr == nil && pprofDir != "" {
		pprofOnce.Do(func() { pprofErr = buildPprofPlugin() })
		return microhostBin, pprofErr
	}
	return microhostBin, buildErr
}

var (
	pprofOnce sync.Once
	pprofErr  error
)

// buildPprofPlugin builds the profiling wrapper into pprofDir/bin, linked
// under the name of every builtin.
func buildPprofPlugin() error {
	bin := filepath.Join(pprofDir, "bin")
	wrapper := filepath.Join(bin, "pprofplugin")
	fmt.Println("  building ./bench/pprofplugin into", bin)
	if out, err := exec.Command("go", "build", "-o", wrapper, "./bench/pprofplugin").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./bench/pprofplugin: %v\n%s", err, out)
	}
	for _, name := range builtin.Names() {
		link := filepath.Join(bin, name)
		os.Remove(link)
		if err := os.Symlink(wrapper, link); err != nil {
			return err
		}
	}
	return nil
}

func removeBuild() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// network is a set of `microhost run` processes sharing a CA in one
// temporary directory.
type network struct {
	dir   string
	certs string

	mu    sync.Mutex
	nodes []*procNode
}

func newNetwork() (*network, error) {
	dir, err := os.MkdirTemp("", "mhb-")
	if err != nil {
		return nil, err
	}
	certs := filepath.Join(dir, "certs")
	if _, err := pki.InitCA(certs); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &network{dir: dir, certs: certs}, nil
}

// nodeSpec is the configuration of one node; everything not named here
// keeps microhost's defaults, so the numbers are those of a default node.
type nodeSpec struct {
	ID     string
	Listen string   // UDP host:port of the tunnel
	Peers  []string // UDP host:port of seed peers
	Proxy  string   // TCP host:port of the proxy; "" for a node without one
	HTTP   string   // TCP host:port of /metrics; "" for none
	Extra  string   // appended verbatim, e.g. service blocks
}

const nodeConfig = `node {
  id       = %q
  network  = "bench"
  listen   = %q
  admin    = %q
  peers    = [%s]
  data_dir = %q
%s}
tls {
  ca   = %q
  cert = %q
  key  = %q
}
%s%s%s%s`

// component is a component block with an empty or given config; with
// -pprof it runs the builtin through the profiling wrapper.
func component(kind, typ, config string) string {
	plugin := ""
	if pprofDir != "" {
		plugin = fmt.Sprintf("  plugin = %q\n", filepath.Join(pprofDir, "bin", kind+"-"+typ))
	}
	return fmt.Sprintf("%s %q {\n%s  config {%s}\n}\n", kind, typ, plugin, config)
}

// procNode is one `microhost run` process.
type procNode struct {
	spec  nodeSpec
	dir   string
	admin *admin.Client
	cmd   *exec.Cmd
	done  chan struct{}
}

// start writes the node's config, starts it and waits until its admin
// API answers.
func (nw *network) start(ctx context.Context, spec nodeSpec) (*procNode, error) {
	bin, err := microhostBinary()
	if err != nil {
		return nil, err
	}
	cert, key, err := pki.Issue(nw.certs, spec.ID, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(nw.dir, spec.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var peers []string
	for _, p := range spec.Peers {
		peers = append(peers, strconv.Quote(p))
	}
	proxy := ""
	if spec.Proxy != "" {
		proxy = component("proxy", "rpc", fmt.Sprintf("\n    listen = %q\n  ", spec.Proxy))
	}
	adminAddr := "unix:" + filepath.Join(dir, "admin.sock")
	httpAddr := ""
	if spec.HTTP != "" {
		httpAddr = fmt.Sprintf("  http     = %q\n", spec.HTTP)
	}
	src := fmt.Sprintf(nodeConfig, spec.ID, spec.Listen, adminAddr, strings.Join(peers, ", "), filepath.Join(dir, "data"), httpAddr,
		filepath.Join(nw.certs, pki.CAFile), cert, key, component("tunnel", "quic", ""), component("router", "memory", ""), proxy, spec.Extra)
	cfgFile := filepath.Join(dir, "node.hcl")
	if err := os.WriteFile(cfgFile, []byte(src), 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "node.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", cfgFile, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if pprofDir != "" {
		cmd.Env = append(os.Environ(), "MICROHOST_BENCH_PPROF_DIR="+pprofDir)
	}
	// Its own process group keeps a terminal's Ctrl-C for the bench, which
	// stops the nodes itself; Pdeathsig ends a node the bench left behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	n := &procNode{spec: spec, dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logFile.Close(); close(n.done) }()
	nw.mu.Lock()
	nw.nodes = append(nw.nodes, n)
	nw.mu.Unlock()
	if n.admin, err = admin.Dial(adminAddr); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		call, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, _, err := n.admin.Info(call)
		cancel()
		if err == nil {
			return n, nil
		}
		select {
		case <-n.done:
			return nil, fmt.Errorf("node %s exited while starting: %s", spec.ID, n.logTail())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("node %s: admin API not up after 60s: %v\n%s", spec.ID, err, n.logTail())
		}
	}
}

// startAll starts the nodes, a few at a time: starting a node's plugin
// processes is CPU-bound, and two cores are shared.
func (nw *network) startAll(ctx context.Context, specs []nodeSpec) ([]*procNode, error) {
	nodes := make([]*procNode, len(specs))
	errs := make([]error, len(specs))
	sem := make(chan struct{}, 6)
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			nodes[i], errs[i] = nw.start(ctx, s)
		})
	}
	wg.Wait()
	return nodes, errors.Join(errs...)
}

func (n *procNode) pid() int { return n.cmd.Process.Pid }

// processes returns the node's host process and its plugins.
func (n *procNode) processes() []int { return append([]int{n.pid()}, children(n.pid())...) }

func (n *procNode) logTail() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "node.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// stop ends the node gracefully (SIGTERM), forcibly after 20 s.
func (n *procNode) stop() {
	if n.admin != nil {
		n.admin.Close()
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		syscall.Kill(-n.pid(), syscall.SIGKILL)
		<-n.done
	}
}

// close stops every node, all at once, and removes the directory.
func (nw *network) close() {
	nw.mu.Lock()
	nodes := nw.nodes
	nw.nodes = nil
	nw.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.stop)
	}
	wg.Wait()
	os.RemoveAll(nw.dir)
}

// children lists the processes whose parent is pid: a host's plugins.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if fields, err := procStat(child); err == nil && len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// procStat returns the fields of /proc/PID/stat after the command name
// (which is in parentheses and may hold spaces): field 3 of proc(5) first.
func procStat(pid int) ([]string, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])), nil
}

func freeUDP() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

func freeTCP() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// scrapeCounter reads one sample, named with its labels exactly as the
// Prometheus text format writes it, from url; 0 when it is absent (a
// counter not yet incremented).
func scrapeCounter(ctx context.Context, url, sample string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %w", url, sample, err)
			}
			return v, nil
		}
	}
	return 0, nil
}
