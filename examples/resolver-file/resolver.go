package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

// maxFileSize bounds what Resolve reads, so a wrong path (a log, a disk
// image) fails clearly instead of filling memory.
const maxFileSize = 4 << 20

type fileResolver struct {
	log hclog.Logger

	mu   sync.Mutex
	path string
}

func newFileResolver(log hclog.Logger) *fileResolver { return &fileResolver{log: log} }

func (r *fileResolver) Info() sdk.Info {
	return sdk.Info{Name: "resolver-file", Kind: sdk.KindResolver, Version: "0.1.0"}
}

func (r *fileResolver) Schema() sdk.Schema {
	return sdk.Schema{Attributes: []sdk.Attribute{{
		Name: "path", Type: sdk.TypePath, Required: true,
		Description: `file listing the peers: JSON {"nodes":[...]} or one "host:port [priority]" per line`,
	}}}
}

func (r *fileResolver) Configure(_ context.Context, req sdk.ConfigureRequest) sdk.Diagnostics {
	var cfg struct {
		Path string `json:"path"`
	}
	if diags := req.Decode(&cfg); diags.HasErrors() {
		return diags
	}
	if cfg.Path == "" {
		return sdk.Diagnostics{sdk.Errorf("path", "missing path", "set path to the file that lists the peers")}
	}
	// Read once now so a typo in the path shows up at start-up, not at the first Resolve.
	if _, err := readPeers(cfg.Path); err != nil {
		return sdk.Diagnostics{sdk.Errorf("path", "unusable peers file", "%v", err)}
	}
	r.mu.Lock()
	r.path = cfg.Path
	r.mu.Unlock()
	return nil
}

func (r *fileResolver) Health(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.path == "" {
		return errors.New("resolver-file: not configured")
	}
	return nil
}

func (r *fileResolver) Close() error { return nil }

// Resolve returns the peers in the file; the file serves every network.
func (r *fileResolver) Resolve(_ context.Context, network string) ([]sdk.Node, error) {
	r.mu.Lock()
	path := r.path
	r.mu.Unlock()
	if path == "" {
		return nil, errors.New("resolver-file: not configured")
	}
	nodes, err := readPeers(path)
	if err != nil {
		return nil, err
	}
	r.log.Debug("resolved", "network", network, "path", path, "nodes", len(nodes))
	return nodes, nil
}

func readPeers(path string) ([]sdk.Node, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileSize)
	}
	return parsePeers(path, data)
}

// parsePeers parses a peers file; name labels errors ("peers.txt:3: ...").
// Nodes come back sorted by priority, duplicates dropped.
func parsePeers(name string, data []byte) ([]sdk.Node, error) {
	var nodes []sdk.Node
	var err error
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		nodes, err = parseJSON(name, trimmed)
	} else {
		nodes, err = parseLines(name, data)
	}
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(nodes, func(a, b sdk.Node) int { return cmp.Compare(a.Priority, b.Priority) })
	seen := map[string]bool{}
	nodes = slices.DeleteFunc(nodes, func(n sdk.Node) bool {
		dup := seen[n.Address]
		seen[n.Address] = true
		return dup
	})
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%s lists no peers: %w", name, sdk.ErrNotFound)
	}
	return nodes, nil
}

func parseJSON(name string, data []byte) ([]sdk.Node, error) {
	var doc struct {
		Nodes []sdk.Node `json:"nodes"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	for i, n := range doc.Nodes {
		if err := checkAddress(n.Address); err != nil {
			return nil, fmt.Errorf("%s: nodes[%d]: %v", name, i, err)
		}
	}
	return doc.Nodes, nil
}

func parseLines(name string, data []byte) ([]sdk.Node, error) {
	var nodes []sdk.Node
	for i, line := range strings.Split(string(data), "\n") {
		if before, _, found := strings.Cut(line, "#"); found {
			line = before
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) > 2 {
			return nil, fmt.Errorf(`%s:%d: want "host:port [priority]", got %d fields`, name, i+1, len(fields))
		}
		if err := checkAddress(fields[0]); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, i+1, err)
		}
		node := sdk.Node{Address: fields[0]}
		if len(fields) == 2 {
			p, err := strconv.Atoi(fields[1])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: priority %q is not an integer", name, i+1, fields[1])
			}
			node.Priority = p
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

func checkAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q needs a host and a port between 1 and 65535", addr)
	}
	return nil
}
