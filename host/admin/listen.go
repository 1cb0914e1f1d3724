package admin

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// Address forms of the admin API: "HOST:PORT" or "unix:/path/to/socket".
const unixPrefix = "unix:"

// splitAddress returns the network ("tcp" or "unix") and address of addr.
func splitAddress(addr string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		if path == "" {
			return "", "", fmt.Errorf("admin address %q: the unix socket path is empty", addr)
		}
		return "unix", path, nil
	}
	if addr == "" {
		return "", "", errors.New("admin address is empty: give HOST:PORT or unix:/path")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("admin address %q is neither HOST:PORT nor unix:/path: %v", addr, err)
	}
	return "tcp", addr, nil
}

// Listen opens the admin address for NewServer's server. A unix socket is
// made readable and writable by its owner only (0600): whoever can reach
// the admin API can change the node's registry. A socket file left behind
// by a node that died is replaced; one that a live node serves is not.
func Listen(addr string) (net.Listener, error) {
	network, address, err := splitAddress(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := removeStaleSocket(address); err != nil {
			return nil, err
		}
	}
	lis, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	if network == "unix" {
		if err := os.Chmod(address, 0o600); err != nil {
			lis.Close()
			return nil, fmt.Errorf("admin API: restricting %s to its owner: %w", address, err)
		}
	}
	return lis, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("admin API: %s exists and is not a unix socket; remove it or choose another path", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("admin API: %s is in use by another process (is another microhost running?)", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("admin API: removing stale socket %s: %w", path, err)
	}
	return nil
}
