package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/host/builtin"
	"github.com/microhost/microhost/host/config"
	"github.com/microhost/microhost/host/supervisor"
	"github.com/microhost/microhost/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// describeTimeout bounds how long an external plugin may take to describe itself.
const describeTimeout = 10 * time.Second

// ComponentSchema finds the config schema of a component without starting
// it: a builtin is asked in process, an external plugin through its
// `describe` command, a standalone instance over gRPC.
func ComponentSchema(ctx context.Context, c *config.Component) (sdk.Schema, error) {
	switch {
	case c.Address != "":
		conn, err := grpc.NewClient(c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return sdk.Schema{}, err
		}
		defer conn.Close()
		client, err := sdk.NewClient(conn, c.Kind, sdk.ClientOptions{})
		if err != nil {
			return sdk.Schema{}, err
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return client.(interface {
			FetchSchema(context.Context) (sdk.Schema, error)
		}).FetchSchema(ctx)
	case c.Plugin != "":
		// Never run a binary whose checksum is wrong, not even to describe it.
		if c.SHA256 != "" {
			if err := supervisor.CheckSHA256(c.Plugin, c.SHA256); err != nil {
				return sdk.Schema{}, err
			}
		}
		ctx, cancel := context.WithTimeout(ctx, describeTimeout)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, c.Plugin, "describe")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		// A plugin's children may hold its output open: end them with it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return sdk.Schema{}, fmt.Errorf("%s describe did not answer within %s", c.Plugin, describeTimeout)
			}
			return sdk.Schema{}, fmt.Errorf("%s describe: %w: %s", c.Plugin, err, bytes.TrimSpace(stderr.Bytes()))
		}
		var d sdk.Description
		if err := json.Unmarshal(stdout.Bytes(), &d); err != nil {
			return sdk.Schema{}, fmt.Errorf("%s describe printed no valid description: %w", c.Plugin, err)
		}
		if d.Info.Kind != c.Kind {
			return sdk.Schema{}, fmt.Errorf("%s is a %s plugin, not a %s", c.Plugin, d.Info.Kind, c.Kind)
		}
		return d.Schema, nil
	}
	newComponent, ok := builtin.Plugins[c.Builtin()]
	if !ok {
		return sdk.Schema{}, fmt.Errorf("there is no builtin %s plugin %q; the builtins are %v (or name an external binary with plugin = \"PATH\")", c.Kind, c.Type, builtin.Names())
	}
	return newComponent(hclog.NewNullLogger()).Schema(), nil
}

// DecodeComponents validates every component's config { } block against
// its plugin's schema; see config.Config.DecodeComponents.
func DecodeComponents(ctx context.Context, cfg *config.Config) (map[string]json.RawMessage, hcl.Diagnostics) {
	return cfg.DecodeComponents(func(c *config.Component) (sdk.Schema, error) {
		return ComponentSchema(ctx, c)
	})
}
