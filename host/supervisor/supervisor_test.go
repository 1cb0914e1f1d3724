package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

// Real plugin binaries, built once for all tests.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func pluginBinary(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "mh-sup-bin-")
		if buildErr != nil {
			return
		}
		for bin, pkg := range map[string]string{
			"resolver-file": "../../examples/resolver-file",
			"junkplugin":    "./testdata/junkplugin",
			"hangplugin":    "./testdata/hangplugin",
		} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, bin), pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func newSupervisor(t *testing.T, log hclog.Logger) *Supervisor {
	t.Helper()
	s, err := New(Options{Log: log, MinBackoff: 50 * time.Millisecond, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.StopAll)
	return s
}

func peersFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "peers")
	if err := os.WriteFile(path, []byte("10.0.0.1:8085 2\n10.0.0.2:8085 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func configureFile(t *testing.T, inst *Instance, path string) {
	t.Helper()
	diags := inst.Configure(t.Context(), sdk.ConfigureRequest{Config: []byte(fmt.Sprintf(`{"path":%q}`, path))})
	if diags.HasErrors() {
		t.Fatal(diags.Err())
	}
}

func resolve(t *testing.T, inst *Instance) []sdk.Node {
	t.Helper()
	nodes, err := inst.Component().(sdk.Resolver).Resolve(t.Context(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	return nodes
}

func TestExternalPluginByPathAnswersAndSurvivesKill(t *testing.T) {
	s := newSupervisor(t, hclog.NewNullLogger())
	inst, err := s.Start(t.Context(), Spec{Name: "resolver-file", Kind: sdk.KindResolver, Path: pluginBinary(t, "resolver-file")})
	if err != nil {
		t.Fatal(err)
	}
	configureFile(t, inst, peersFile(t))
	if nodes := resolve(t, inst); len(nodes) != 2 || nodes[0].Address != "10.0.0.2:8085" {
		t.Fatalf("resolve: %+v", nodes)
	}

	pid := inst.PID()
	if pid == 0 {
		t.Fatal("no pid for a started plugin")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Restarted, re-configured with the same request, and answering Health
	// again within 5 s.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := inst.Status()
		if st.Restarts >= 1 && st.State == StateRunning && inst.PID() != pid {
			if err := inst.Component().Health(t.Context()); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin not back within 5 s: %+v", inst.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if nodes := resolve(t, inst); len(nodes) != 2 {
		t.Fatalf("resolve after restart (configuration lost?): %+v", nodes)
	}
}

func TestPluginJunkOnStdoutAndStderr(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	log := hclog.New(&hclog.LoggerOptions{Output: writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), Level: hclog.Trace})
	s := newSupervisor(t, log)
	inst, err := s.Start(t.Context(), Spec{Name: "resolver-junk", Kind: sdk.KindResolver, Path: pluginBinary(t, "junkplugin")})
	if err != nil {
		t.Fatal(err)
	}
	if diags := inst.Configure(t.Context(), sdk.ConfigureRequest{}); diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	for range 20 {
		if nodes := resolve(t, inst); len(nodes) != 1 {
			t.Fatalf("resolve: %+v", nodes)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if inst.Status().Restarts != 0 {
		t.Fatalf("junk output made the plugin restart: %+v", inst.Status())
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "junk on stdout") {
		t.Errorf("the junk written to stdout was not logged:\n%s", logs.String())
	}
}

func TestWrongKindRefused(t *testing.T) {
	s := newSupervisor(t, hclog.NewNullLogger())
	_, err := s.Start(t.Context(), Spec{Name: "router-file", Kind: sdk.KindRouter, Path: pluginBinary(t, "resolver-file")})
	if err == nil || !strings.Contains(err.Error(), "is a resolver, not a router") {
		t.Fatalf("want a kind mismatch error, got %v", err)
	}
}

func TestChecksumMismatchRefused(t *testing.T) {
	s := newSupervisor(t, hclog.NewNullLogger())
	bin := pluginBinary(t, "resolver-file")
	wrong := sha256.Sum256([]byte("not the binary"))
	_, err := s.Start(t.Context(), Spec{Name: "resolver-file", Kind: sdk.KindResolver, Path: bin, SHA256: hex.EncodeToString(wrong[:])})
	if err == nil || !strings.Contains(err.Error(), "it was not run") {
		t.Fatalf("want a checksum error, got %v", err)
	}

	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	inst, err := s.Start(t.Context(), Spec{Name: "resolver-file-2", Kind: sdk.KindResolver, Path: bin, SHA256: hex.EncodeToString(h.Sum(nil))})
	if err != nil {
		t.Fatalf("the right checksum was refused: %v", err)
	}
	configureFile(t, inst, peersFile(t))
}

func TestMissingBinary(t *testing.T) {
	s := newSupervisor(t, hclog.NewNullLogger())
	_, err := s.Start(t.Context(), Spec{Name: "x", Kind: sdk.KindResolver, Path: "/nonexistent/plugin"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/plugin") {
		t.Fatalf("want an error naming the path, got %v", err)
	}
}

func TestStandaloneInstanceByAddress(t *testing.T) {
	bin := pluginBinary(t, "resolver-file")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "standalone.hcl")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("config {\n  path = %q\n}\n", peersFile(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "serve", "--listen", addr, "--config", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})

	s := newSupervisor(t, hclog.NewNullLogger())
	var inst *Instance
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		inst, err = s.Start(ctx, Spec{Name: "resolver-file", Kind: sdk.KindResolver, Address: addr})
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The standalone process was configured from its own file; it answers
	// the same API as under a host.
	if nodes := resolve(t, inst); len(nodes) != 2 {
		t.Fatalf("resolve: %+v", nodes)
	}
	inst.Stop()
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatal("stopping a standalone instance must not stop its process")
	}
}

// A plugin that stops answering (here: stopped with SIGSTOP) is killed and
// restarted like one that died.
func TestHungPluginIsKilledAndRestarted(t *testing.T) {
	s, err := New(Options{
		Log: hclog.NewNullLogger(), MinBackoff: 50 * time.Millisecond, PollInterval: 50 * time.Millisecond,
		HealthInterval: 100 * time.Millisecond, HealthTimeout: 100 * time.Millisecond, HealthFailures: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.StopAll)
	inst, err := s.Start(t.Context(), Spec{Name: "resolver-file", Kind: sdk.KindResolver, Path: pluginBinary(t, "resolver-file")})
	if err != nil {
		t.Fatal(err)
	}
	configureFile(t, inst, peersFile(t))
	hung := inst.PID()
	if err := syscall.Kill(hung, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(hung, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for inst.Status().Restarts == 0 || inst.Status().State != StateRunning || inst.PID() == hung {
		if time.Now().After(deadline) {
			t.Fatalf("the hung plugin was not replaced: %+v", inst.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if nodes := resolve(t, inst); len(nodes) != 2 {
		t.Fatalf("resolve after the restart: %+v", nodes)
	}
}

// A plugin that never shakes hands fails to start in bounded time, and
// nothing it started is left behind, even a child holding its output.
func TestPluginThatNeverStartsLeavesNothing(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	t.Setenv("HANG_CHILD_PID_FILE", pidFile)
	s, err := New(Options{Log: hclog.NewNullLogger(), StartTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.StopAll)
	bin := pluginBinary(t, "hangplugin")
	done := make(chan error, 1)
	go func() {
		_, err := s.Start(t.Context(), Spec{Name: "hang", Kind: sdk.KindResolver, Path: bin})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a plugin that never completed its handshake was started")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start hung on a plugin that never completed its handshake")
	}
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the plugin's child %d outlived it", child)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(stat), ") Z ")
}
