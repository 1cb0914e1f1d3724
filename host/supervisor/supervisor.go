// Package supervisor starts component plugins, keeps them running and
// stops them. A plugin is a builtin (this binary re-executed), an external
// binary, or a standalone instance reached at an address; either way the
// host gets one sdk client per instance that survives restarts.
package supervisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/microhost/microhost/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Spec says how to run one component instance.
type Spec struct {
	Name string // instance name, e.g. "tunnel-quic" or "resolver-dns-2"
	Kind sdk.Kind
	// Exactly one of the following.
	Builtin string // builtin plugin name: run as `<self> plugin serve <Builtin>`
	Path    string // external plugin binary
	Address string // standalone instance: connect, never start or stop it
	// SHA256, if set, is the expected checksum of Path.
	SHA256 string
}

// State of an instance.
type State string

const (
	StateStarting   State = "starting"
	StateRunning    State = "running"
	StateRestarting State = "restarting"
	StateFailed     State = "failed"
	StateStopped    State = "stopped"
)

// Options configure a Supervisor.
type Options struct {
	Log hclog.Logger
	// Self is the executable that serves builtins; default os.Executable().
	Self string
	// SocketDir holds plugin sockets. Keep it short: unix socket paths are
	// limited to ~104 bytes.
	SocketDir string
	// HostAddress is where standalone instances reach the host's callbacks.
	HostAddress string
	// Reattach maps instance names to running plugins to attach to instead
	// of starting them (the `debug` mode of a plugin binary).
	Reattach map[string]*plugin.ReattachConfig
	// MinBackoff and MaxBackoff bound the delay between restarts.
	MinBackoff, MaxBackoff time.Duration
	// PollInterval is how often a plugin process is checked for having exited.
	PollInterval time.Duration
	// HealthInterval is how often a plugin process is asked, over gRPC,
	// whether it still answers; one that misses HealthFailures answers in a
	// row (each within HealthTimeout) is hung, and is killed and restarted.
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	HealthFailures int
	// StartTimeout bounds a plugin's handshake.
	StartTimeout time.Duration
}

// Supervisor runs component instances.
type Supervisor struct {
	opts Options
	log  hclog.Logger

	mu        sync.Mutex
	instances []*Instance
}

// New returns a supervisor.
func New(opts Options) (*Supervisor, error) {
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	if opts.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("cannot find this executable to start builtin plugins: %w", err)
		}
		opts.Self = self
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 200 * time.Millisecond
	}
	if opts.HealthInterval == 0 {
		opts.HealthInterval = 2 * time.Second
	}
	if opts.HealthTimeout == 0 {
		opts.HealthTimeout = time.Second
	}
	if opts.HealthFailures == 0 {
		opts.HealthFailures = 3
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.SocketDir == "" {
		dir, err := os.MkdirTemp("", "mh-")
		if err != nil {
			return nil, err
		}
		opts.SocketDir = dir
	}
	return &Supervisor{opts: opts, log: opts.Log}, nil
}

// Instance is one running component.
type Instance struct {
	spec   Spec
	sup    *Supervisor
	log    hclog.Logger
	conn   swapConn
	client sdk.Component

	mu        sync.Mutex
	state     State
	since     time.Time
	restarts  int
	lastErr   error
	pid       int
	cmd       *exec.Cmd // the process we started; nil when reattached or at an address
	plugin    *plugin.Client
	broker    *plugin.GRPCBroker
	direct    *grpc.ClientConn // for Address instances
	configure *sdk.ConfigureRequest
	stop      chan struct{}
	stopped   chan struct{}
	onRestart func(*Instance)
}

// Status is a snapshot of an instance for the admin API.
type Status struct {
	Name     string
	Kind     sdk.Kind
	Source   string // "builtin NAME", "plugin PATH" or "address ADDR"
	State    State
	PID      int
	Restarts int
	LastErr  string
	Since    time.Time // when it entered State
}

// Start starts (or connects to) an instance and checks that it is the
// kind it is declared as. The returned instance's Component keeps working
// across restarts.
func (s *Supervisor) Start(ctx context.Context, spec Spec) (*Instance, error) {
	inst := &Instance{
		spec: spec, sup: s, log: s.log.Named(spec.Name), state: StateStarting, since: time.Now(),
		stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	client, err := sdk.NewClient(&inst.conn, spec.Kind, sdk.ClientOptions{ServeHost: inst.serveHost})
	if err != nil {
		return nil, err
	}
	inst.client = client
	if err := inst.launch(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", spec.Name, err)
	}
	s.mu.Lock()
	s.instances = append(s.instances, inst)
	s.mu.Unlock()
	go inst.watch()
	return inst, nil
}

// Component is the instance's client; it implements the interface of the
// instance's kind.
func (i *Instance) Component() sdk.Component { return i.client }

// Spec returns what the instance was started from.
func (i *Instance) Spec() Spec { return i.spec }

// OnRestart registers f to run after the instance was restarted and
// re-configured (e.g. to reopen streams).
func (i *Instance) OnRestart(f func(*Instance)) {
	i.mu.Lock()
	i.onRestart = f
	i.mu.Unlock()
}

// Configure configures the instance and remembers the request, so that a
// restarted plugin is configured the same way.
func (i *Instance) Configure(ctx context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	diags := i.client.Configure(ctx, req)
	if !diags.HasErrors() {
		i.mu.Lock()
		i.configure = &req
		i.mu.Unlock()
	}
	return diags
}

func (i *Instance) serveHost(h sdk.Host) (uint32, string, error) {
	i.mu.Lock()
	broker := i.broker
	i.mu.Unlock()
	if broker != nil {
		return sdk.ServeHostOverBroker(broker)(h)
	}
	if i.sup.opts.HostAddress == "" {
		return 0, "", errors.New("standalone components need the host's admin address to call back")
	}
	return 0, i.sup.opts.HostAddress, nil
}

// launch starts the plugin process (or dials the address) and swaps the
// instance's connection to it.
func (i *Instance) launch(ctx context.Context) error {
	if i.spec.Address != "" {
		conn, err := grpc.NewClient(i.spec.Address, append(sdk.MessageSizeDialOptions(),
			grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			return fmt.Errorf("standalone instance at %s: %w", i.spec.Address, err)
		}
		i.conn.conn.Store(conn)
		i.mu.Lock()
		i.direct = conn
		i.mu.Unlock()
		return i.checkKind(ctx)
	}

	cfg := &plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          plugin.PluginSet{sdk.PluginName: &sdk.GRPCPlugin{}},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           i.log,
		GRPCDialOptions:  sdk.MessageSizeDialOptions(),
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: i.sup.opts.SocketDir},
		StartTimeout:     i.sup.opts.StartTimeout,
		SyncStdout:       logWriter(i.log, "stdout"),
		SyncStderr:       logWriter(i.log, "stderr"),
	}
	if rc := i.sup.opts.Reattach[i.spec.Name]; rc != nil {
		cfg.Reattach = rc
	} else {
		cmd, err := i.command()
		if err != nil {
			return err
		}
		cfg.Cmd = cmd
		i.mu.Lock()
		i.cmd = cmd
		i.mu.Unlock()
		if i.spec.SHA256 != "" {
			if err := CheckSHA256(i.spec.Path, i.spec.SHA256); err != nil {
				return err
			}
			// go-plugin checks again right before it starts the binary.
			sum, _ := hex.DecodeString(i.spec.SHA256)
			cfg.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
		}
	}
	pc := plugin.NewClient(cfg)
	rpc, err := pc.Client()
	if err != nil {
		i.kill(pc)
		return fmt.Errorf("starting plugin: %w", err)
	}
	raw, err := rpc.Dispense(sdk.PluginName)
	if err != nil {
		i.kill(pc)
		return fmt.Errorf("plugin handshake: %w", err)
	}
	pconn, ok := raw.(*sdk.PluginConn)
	if !ok {
		i.kill(pc)
		return fmt.Errorf("plugin handshake: unexpected %T", raw)
	}
	i.mu.Lock()
	i.plugin, i.broker = pc, pconn.Broker
	if rc := pc.ReattachConfig(); rc != nil {
		i.pid = rc.Pid
	}
	i.mu.Unlock()
	i.conn.conn.Store(pconn.Conn)
	if err := i.checkKind(ctx); err != nil {
		i.kill(pc)
		return err
	}
	return nil
}

// kill ends a plugin process we started, with everything it started: it
// runs in a process group of its own, and a child left holding its output
// would otherwise keep go-plugin waiting for ever.
func (i *Instance) kill(pc *plugin.Client) {
	i.killGroup()
	pc.Kill()
}

// killGroup ends what is left of the process group of the plugin we started.
func (i *Instance) killGroup() {
	i.mu.Lock()
	cmd := i.cmd
	i.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// CheckSHA256 checks that the file at path has the given hex SHA-256.
func CheckSHA256(path, want string) error {
	sum, err := hex.DecodeString(want)
	if err != nil || len(sum) != sha256.Size {
		return fmt.Errorf("sha256 %q is not a hex SHA-256 digest", want)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("plugin binary %s: %w", path, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, sum) {
		return fmt.Errorf("plugin binary %s has sha256 %x, not the %s the configuration wants: it was not run", path, got, want)
	}
	return nil
}

func (i *Instance) command() (*exec.Cmd, error) {
	switch {
	case i.spec.Builtin != "":
		return ownGroup(exec.Command(i.sup.opts.Self, "plugin", "serve", i.spec.Builtin)), nil
	case i.spec.Path != "":
		if _, err := os.Stat(i.spec.Path); err != nil {
			return nil, fmt.Errorf("plugin binary: %w", err)
		}
		return ownGroup(exec.Command(i.spec.Path)), nil
	}
	return nil, errors.New("neither builtin, plugin path nor address given")
}

// ownGroup runs cmd in a process group of its own, so that the plugin and
// whatever it starts can be ended together, and signals meant for the
// host's group (a terminal's Ctrl-C) reach the host alone, which stops its
// plugins in order.
func ownGroup(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second
	return cmd
}

func (i *Instance) checkKind(ctx context.Context) error {
	fetcher, ok := i.client.(interface {
		FetchInfo(context.Context) (sdk.Info, error)
	})
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := fetcher.FetchInfo(ctx)
	return err
}

// watch restarts the plugin when its process dies or hangs, with backoff,
// and re-applies its configuration.
func (i *Instance) watch() {
	defer close(i.stopped)
	backoff := i.sup.opts.MinBackoff
	tick := time.NewTicker(i.sup.opts.PollInterval)
	defer tick.Stop()
	nextHealth := time.Now().Add(i.sup.opts.HealthInterval)
	missed := 0
	for {
		select {
		case <-i.stop:
			return
		case <-tick.C:
		}
		i.mu.Lock()
		pc := i.plugin
		i.mu.Unlock()
		if pc == nil {
			continue
		}
		if !pc.Exited() {
			if time.Now().Before(nextHealth) {
				continue
			}
			nextHealth = time.Now().Add(i.sup.opts.HealthInterval)
			if err := i.ping(); err == nil {
				missed = 0
				continue
			} else if missed++; missed < i.sup.opts.HealthFailures {
				i.log.Warn("plugin did not answer its health check", "error", err, "missed", missed)
				continue
			}
			i.log.Error("plugin hung: killing it", "missed_health_checks", missed)
			i.killProcess()
			missed = 0
			continue // the next tick sees it exited
		}
		i.setState(StateRestarting, errors.New("plugin process exited"))
		i.log.Error("plugin exited; restarting", "backoff", backoff.String())
		for {
			select {
			case <-i.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, i.sup.opts.MaxBackoff)
			if err := i.restart(); err != nil {
				i.setState(StateRestarting, err)
				i.log.Error("restart failed", "error", err, "next_backoff", backoff.String())
				continue
			}
			backoff = i.sup.opts.MinBackoff
			nextHealth = time.Now().Add(i.sup.opts.HealthInterval)
			break
		}
	}
}

// ping asks the plugin's gRPC server whether it is serving, the check
// go-plugin registers on every plugin. It is about the process answering,
// not about the component's own health, which may fail for reasons that
// a restart would not cure.
func (i *Instance) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), i.sup.opts.HealthTimeout)
	defer cancel()
	_, err := healthpb.NewHealthClient(&i.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "plugin"})
	return err
}

// killProcess ends a hung plugin process the hard way.
func (i *Instance) killProcess() {
	i.mu.Lock()
	pid := i.pid
	i.mu.Unlock()
	if pid == 0 || i.sup.opts.Reattach[i.spec.Name] != nil {
		return
	}
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill()
	}
}

func (i *Instance) restart() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := i.launch(ctx); err != nil {
		return err
	}
	i.mu.Lock()
	req, onRestart := i.configure, i.onRestart
	i.restarts++
	i.mu.Unlock()
	if req != nil {
		if diags := i.client.Configure(ctx, *req); diags.HasErrors() {
			// Leave no unconfigured process behind: the next try starts afresh.
			i.killProcess()
			return fmt.Errorf("re-configuring: %w", diags.Err())
		}
	}
	i.setState(StateRunning, nil)
	i.log.Info("plugin restarted and re-configured")
	if onRestart != nil {
		onRestart(i)
	}
	return nil
}

func (i *Instance) setState(s State, err error) {
	i.mu.Lock()
	if i.state != s {
		i.since = time.Now()
	}
	i.state = s
	if err != nil {
		i.lastErr = err
	}
	i.mu.Unlock()
}

// MarkRunning records that the instance is configured and serving.
func (i *Instance) MarkRunning() { i.setState(StateRunning, nil) }

// Status returns a snapshot of the instance.
func (i *Instance) Status() Status {
	i.mu.Lock()
	defer i.mu.Unlock()
	st := Status{Name: i.spec.Name, Kind: i.spec.Kind, State: i.state, PID: i.pid, Restarts: i.restarts, Since: i.since}
	switch {
	case i.spec.Builtin != "":
		st.Source = "builtin " + i.spec.Builtin
	case i.spec.Path != "":
		st.Source = "plugin " + i.spec.Path
	default:
		st.Source = "address " + i.spec.Address
	}
	if i.lastErr != nil {
		st.LastErr = i.lastErr.Error()
	}
	return st
}

// Signal sends sig to the plugin process this supervisor started; it does
// nothing for standalone or reattached instances, which are not ours.
func (i *Instance) Signal(sig os.Signal) error {
	i.mu.Lock()
	pid := i.pid
	i.mu.Unlock()
	if pid == 0 || i.spec.Address != "" || i.sup.opts.Reattach[i.spec.Name] != nil {
		return nil
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

// PID is the plugin's process id, 0 for a standalone instance.
func (i *Instance) PID() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.pid
}

// Stop drains the component (Close), then ends its process. A standalone
// instance is only disconnected: it is not ours to stop.
func (i *Instance) Stop() {
	select {
	case <-i.stop:
		return
	default:
	}
	close(i.stop)
	<-i.stopped
	i.mu.Lock()
	pc, direct := i.plugin, i.direct
	i.mu.Unlock()
	if pc != nil {
		if err := i.client.Close(); err != nil {
			i.log.Warn("component did not drain cleanly", "error", err)
		}
		pc.Kill()
		i.killGroup()
	}
	if direct != nil {
		direct.Close()
	}
	i.setState(StateStopped, nil)
}

// Instances lists the instances in start order.
func (s *Supervisor) Instances() []*Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Instance(nil), s.instances...)
}

// StopAll stops every instance in reverse start order, so that a component
// stops before those it depends on.
func (s *Supervisor) StopAll() {
	insts := s.Instances()
	for k := len(insts) - 1; k >= 0; k-- {
		insts[k].Stop()
	}
	os.RemoveAll(s.opts.SocketDir)
}

// logWriter turns what a plugin writes to its stdout or stderr after the
// handshake into log lines, whatever it is: junk never reaches the
// handshake or the log parser.
func logWriter(log hclog.Logger, stream string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		log.Warn("plugin output outside its log", "stream", stream, "text", string(p))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// ParseReattach reads MICROHOST_REATTACH, printed by a plugin's `debug` mode.
func ParseReattach(s string) (map[string]*plugin.ReattachConfig, error) {
	if s == "" {
		return nil, nil
	}
	var raw map[string]struct {
		Protocol        string `json:"protocol"`
		ProtocolVersion int    `json:"protocol_version"`
		Pid             int    `json:"pid"`
		Network         string `json:"network"`
		Address         string `json:"address"`
	}
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("MICROHOST_REATTACH is not valid JSON: %w", err)
	}
	out := map[string]*plugin.ReattachConfig{}
	for name, r := range raw {
		var addr net.Addr
		var err error
		switch r.Network {
		case "unix":
			addr, err = net.ResolveUnixAddr("unix", r.Address)
		default:
			addr, err = net.ResolveTCPAddr("tcp", r.Address)
		}
		if err != nil {
			return nil, fmt.Errorf("MICROHOST_REATTACH %s: %w", name, err)
		}
		// Test marks the plugin as not ours: it is never killed, so a reused
		// PID can never make us kill an unrelated process.
		out[name] = &plugin.ReattachConfig{
			Protocol: plugin.Protocol(r.Protocol), ProtocolVersion: r.ProtocolVersion,
			Pid: r.Pid, Addr: addr, Test: true,
		}
	}
	return out, nil
}
