// Command pprofplugin serves a builtin microhost plugin, chosen by the name
// it is run under (a link named "tunnel-quic" serves tunnel-quic), with
// net/http/pprof on a loopback port, so that the bench can profile plugins
// inside real node processes (go run ./bench -pprof DIR). It writes the
// port's address to DIR/NAME-PID.addr, DIR being $MICROHOST_BENCH_PPROF_DIR.
package main

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"path/filepath"

	"github.com/microhost/microhost/host/builtin"
	"github.com/microhost/microhost/sdk"
)

func main() {
	name := filepath.Base(os.Args[0])
	newComponent, ok := builtin.Plugins[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "pprofplugin: run it under the name of a builtin plugin (%v), not %q\n", builtin.Names(), name)
		os.Exit(2)
	}
	if dir := os.Getenv("MICROHOST_BENCH_PPROF_DIR"); dir != "" {
		if err := servePprof(dir, name); err != nil {
			fmt.Fprintln(os.Stderr, "pprofplugin:", err)
			os.Exit(1)
		}
	}
	sdk.Serve(newComponent)
}

func servePprof(dir, name string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	file := filepath.Join(dir, fmt.Sprintf("%s-%d.addr", name, os.Getpid()))
	if err := os.WriteFile(file, []byte(ln.Addr().String()), 0o644); err != nil {
		return err
	}
	go http.Serve(ln, nil)
	return nil
}
