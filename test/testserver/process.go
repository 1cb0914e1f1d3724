// Package testserver starts real third-party servers (dnsmasq, unbound,
// nginx) as child processes for tests, on free loopback ports, and stops
// them when the test ends.
package testserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startAttempts bounds retries when another process grabs a port between
// picking it and the server binding it.
const startAttempts = 5

// readyTimeout is how long a server may take to start answering.
const readyTimeout = 10 * time.Second

// Binary returns the path of a server binary. When it is missing the test
// is skipped, or fails when the CI environment variable is set, naming the
// package that provides it.
func Binary(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	// sbin directories are often missing from a non-root PATH.
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found in PATH or sbin: install the %q package", name, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	} else {
		t.Skip(msg)
	}
	return ""
}

// process is a server running in its own process group.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// start runs bin with args, sending its output to logPath. The process gets
// its own process group (so stopping it takes its workers too) and is killed
// if the test binary dies first.
func start(name, bin string, args []string, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// log returns what the process has written so far.
func (p *process) log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	return string(b)
}

// signal sends sig to the process, unless it has exited.
func (p *process) signal(sig syscall.Signal) error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s has exited: %v", p.name, p.waitErr)
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// stop terminates the process group, escalating to SIGKILL after a grace period.
func (p *process) stop() {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
	// Workers outliving their master are killed with the group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitReady polls ready until it succeeds, the process exits or the
// deadline passes. An exit caused by a port clash returns errPortInUse.
func (p *process) waitReady(ready func() error) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			log := p.log()
			if strings.Contains(log, "in use") {
				return errPortInUse
			}
			return fmt.Errorf("%s exited during start-up (%v):\n%s", p.name, p.waitErr, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v\n%s", p.name, readyTimeout, err, p.log())
		}
	}
}

var errPortInUse = errors.New("port in use")

// runServer picks a free port, starts the server built by args(port) and
// waits for it, retrying on port clashes. The process is stopped when the
// test ends, and its log is printed if the test failed.
func runServer(t testing.TB, name, bin, logPath string, args func(port int) []string, ready func(port int) error) (*process, int) {
	t.Helper()
	for range startAttempts {
		port, err := FreePort()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p, err := start(name, bin, args(port), logPath)
		if err != nil {
			t.Fatal(err)
		}
		err = p.waitReady(func() error { return ready(port) })
		if errors.Is(err, errPortInUse) {
			p.stop()
			continue
		}
		if err != nil {
			p.stop()
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.stop()
			if t.Failed() {
				t.Logf("%s log:\n%s", name, p.log())
			}
		})
		return p, port
	}
	t.Fatalf("%s: no free port after %d attempts", name, startAttempts)
	return nil, 0
}

// FreePort returns a loopback port that is free for both TCP and UDP.
func FreePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("no port free for both TCP and UDP on 127.0.0.1")
}
