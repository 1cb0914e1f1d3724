// Command microsim runs the network protocol simulator: N nodes of the real
// protocol and router code over an in-memory tunnel in one process. It
// announces and withdraws one service, announces it again and stops its
// node, and prints how long each took to
// reach every node and how many control messages it cost per link.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/microhost/microhost/host/sim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "microsim:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg sim.Config
	flag.IntVar(&cfg.Nodes, "nodes", 50, "number of nodes")
	flag.IntVar(&cfg.Degree, "degree", 4, "links per node")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "topology seed")
	flag.DurationVar(&cfg.RTT, "rtt", time.Millisecond, "RTT of every link")
	flag.DurationVar(&cfg.PeerInterval, "peer-interval", time.Second, "interval of peer messages")
	flag.DurationVar(&cfg.FlushInterval, "flush-interval", 0, "router advert batching (0: the router's default)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	asJSON := flag.Bool("json", false, "print results as JSON")
	verbose := flag.Bool("v", false, "log the protocol to stderr")
	flag.Parse()
	if *verbose {
		cfg.Log = hclog.New(&hclog.LoggerOptions{Name: "microsim", Output: os.Stderr, Level: hclog.Info})
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	s, err := sim.New(cfg)
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Stop(stopCtx); err != nil {
			fmt.Fprintln(os.Stderr, "microsim: stop:", err)
		}
	}()
	began := time.Now()
	if err := s.Start(ctx); err != nil {
		return err
	}
	if err := s.WaitGraph(ctx); err != nil {
		return err
	}
	formed := time.Since(began)
	up, err := s.Announce(ctx, 0, "greeter")
	if err != nil {
		return err
	}
	down, err := s.Withdraw(ctx, 0, "greeter")
	if err != nil {
		return err
	}
	if _, err := s.Announce(ctx, 0, "greeter"); err != nil {
		return err
	}
	left, err := s.Leave(ctx, 0, "greeter")
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"graph_formed": formed.String(), "announce": up, "withdraw": down, "leave": left})
	}
	fmt.Printf("%d nodes, %d links, diameter %d from the origin; graph formed in %v\n", up.Nodes, up.Links, up.Diameter, formed.Round(time.Millisecond))
	for _, r := range []struct {
		name string
		r    sim.Result
	}{{"announce", up}, {"withdraw", down}, {"leave", left}} {
		fmt.Printf("%-8s converged in %-8v settled in %-8v %5d control messages, %.2f per link\n",
			r.name, r.r.Converge.Round(time.Millisecond), r.r.Settle.Round(time.Millisecond), r.r.Messages, r.r.PerLink)
	}
	return nil
}
