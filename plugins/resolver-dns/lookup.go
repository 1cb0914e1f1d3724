package resolverdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/microhost/microhost/sdk"
	"github.com/miekg/dns"
)

// notFound errors match sdk.ErrNotFound.
type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == sdk.ErrNotFound }

var (
	// ErrNXDomain: the server says the name does not exist.
	ErrNXDomain error = notFound("name does not exist (NXDOMAIN)")
	// ErrNoRecords: the name exists but has no records of the asked type.
	ErrNoRecords error = notFound("no records")
	// ErrServFail: the server failed to answer.
	ErrServFail = errors.New("server failure (SERVFAIL)")
	// ErrTimeout: no answer in time.
	ErrTimeout = errors.New("timed out")
	// ErrNoService: the SRV record's target is ".", the RFC 2782 way of
	// saying the service is deliberately not offered.
	ErrNoService = errors.New(`service not available (SRV target ".")`)
)

// QueryError says what was asked of which server and what went wrong.
type QueryError struct {
	Type   string // "SRV", "A", "AAAA"
	Name   string
	Server string
	Err    error
}

func (e *QueryError) Error() string {
	return fmt.Sprintf("%s %s at %s: %v", e.Type, e.Name, e.Server, e.Err)
}

func (e *QueryError) Unwrap() error { return e.Err }

// record is one resolved peer entry before ordering: an SRV record's
// addresses, or one A/AAAA address.
type record struct {
	priority int
	weight   int
	addrs    []string // host:port
}

// answer is a resolved name and how long it may be cached.
type answer struct {
	records []record
	ttl     time.Duration
}

// lookup asks the configured servers about cfg.name.
func lookup(ctx context.Context, cfg *config) (answer, error) {
	if cfg.srv {
		return lookupSRV(ctx, cfg)
	}
	ips, ttl, err := lookupAddrs(ctx, cfg, cfg.name)
	if err != nil {
		return answer{}, err
	}
	var recs []record
	for _, ip := range ips {
		recs = append(recs, record{addrs: []string{net.JoinHostPort(ip, strconv.Itoa(cfg.port))}})
	}
	return answer{records: recs, ttl: ttl}, nil
}

func lookupSRV(ctx context.Context, cfg *config) (answer, error) {
	msg, server, err := query(ctx, cfg, cfg.name, dns.TypeSRV)
	if err != nil {
		return answer{}, err
	}
	var srvs []*dns.SRV
	ttl := time.Duration(-1)
	for _, rr := range msg.Answer {
		if srv, ok := rr.(*dns.SRV); ok {
			srvs = append(srvs, srv)
			ttl = minTTL(ttl, rr.Header().Ttl)
		}
	}
	if len(srvs) == 0 {
		return answer{}, &QueryError{Type: "SRV", Name: cfg.name, Server: server, Err: ErrNoRecords}
	}
	if len(srvs) == 1 && srvs[0].Target == "." {
		return answer{}, &QueryError{Type: "SRV", Name: cfg.name, Server: server, Err: ErrNoService}
	}

	// Servers usually add the targets' addresses to the additional section.
	glue := map[string][]string{}
	glueTTL := map[string]uint32{}
	for _, rr := range msg.Extra {
		var ip net.IP
		switch a := rr.(type) {
		case *dns.A:
			ip = a.A
		case *dns.AAAA:
			ip = a.AAAA
		default:
			continue
		}
		name := strings.ToLower(rr.Header().Name)
		glue[name] = append(glue[name], ip.String())
		if t, ok := glueTTL[name]; !ok || rr.Header().Ttl < t {
			glueTTL[name] = rr.Header().Ttl
		}
	}

	var recs []record
	var errs []error
	for _, srv := range srvs {
		target := strings.ToLower(srv.Target)
		if _, ok := dns.IsDomainName(target); !ok || target == "." {
			errs = append(errs, fmt.Errorf("SRV %s at %s: malformed target %q", cfg.name, server, srv.Target))
			continue
		}
		ips, ok := glue[target]
		if ok {
			ttl = minTTL(ttl, glueTTL[target])
		} else {
			var t time.Duration
			ips, t, err = lookupAddrs(ctx, cfg, target)
			if err != nil {
				errs = append(errs, fmt.Errorf("SRV %s target %s: %w", cfg.name, srv.Target, err))
				continue
			}
			ttl = min(ttl, t)
			// Several records (ports) may share a target: ask once.
			glue[target], glueTTL[target] = ips, uint32(t/time.Second)
		}
		rec := record{priority: int(srv.Priority), weight: int(srv.Weight)}
		for _, ip := range ips {
			rec.addrs = append(rec.addrs, net.JoinHostPort(ip, strconv.Itoa(int(srv.Port))))
		}
		recs = append(recs, rec)
	}
	if len(recs) == 0 {
		return answer{}, errors.Join(errs...)
	}
	// Some targets resolved: use them, but say what was left out.
	return answer{records: recs, ttl: ttl}, errors.Join(errs...)
}

// lookupAddrs queries A and AAAA records of name in parallel.
func lookupAddrs(ctx context.Context, cfg *config, name string) ([]string, time.Duration, error) {
	type result struct {
		ips []string
		ttl time.Duration
		err error
	}
	types := []uint16{dns.TypeA, dns.TypeAAAA}
	results := make([]result, len(types))
	done := make(chan struct{}, len(types))
	for i, qtype := range types {
		go func() {
			defer func() { done <- struct{}{} }()
			msg, _, err := query(ctx, cfg, name, qtype)
			if err != nil {
				results[i].err = err
				return
			}
			results[i].ttl = -1
			for _, rr := range msg.Answer {
				switch a := rr.(type) {
				case *dns.A:
					results[i].ips = append(results[i].ips, a.A.String())
				case *dns.AAAA:
					results[i].ips = append(results[i].ips, a.AAAA.String())
				default:
					continue
				}
				results[i].ttl = minTTL(results[i].ttl, rr.Header().Ttl)
			}
		}()
	}
	for range types {
		<-done
	}
	a, aaaa := results[0], results[1]
	ips := append(a.ips, aaaa.ips...)
	if len(ips) > 0 {
		ttl := a.ttl
		if len(a.ips) == 0 || (len(aaaa.ips) > 0 && aaaa.ttl < ttl) {
			ttl = aaaa.ttl
		}
		return ips, ttl, nil
	}
	switch {
	case a.err == nil && aaaa.err == nil:
		return nil, 0, &QueryError{Type: "A/AAAA", Name: name, Server: strings.Join(cfg.servers, ", "), Err: ErrNoRecords}
	case errors.Is(a.err, ErrNXDomain) || aaaa.err == nil:
		// NXDOMAIN for A means NXDOMAIN for AAAA too: one message is enough.
		return nil, 0, a.err
	case a.err == nil:
		return nil, 0, aaaa.err
	default:
		return nil, 0, errors.Join(a.err, aaaa.err)
	}
}

// query asks each server in turn until one gives a definite answer
// (NOERROR or NXDOMAIN). It returns the answer and the server that gave it.
func query(ctx context.Context, cfg *config, name string, qtype uint16) (*dns.Msg, string, error) {
	var errs []error
	for _, server := range cfg.servers {
		msg, err := exchange(ctx, cfg.timeout, server, name, qtype)
		if err == nil {
			return msg, server, nil
		}
		errs = append(errs, err)
		if errors.Is(err, ErrNXDomain) || ctx.Err() != nil {
			break
		}
	}
	return nil, "", errors.Join(errs...)
}

// exchange sends one query to one server, over TCP when the UDP answer
// was truncated.
func exchange(ctx context.Context, timeout time.Duration, server, name string, qtype uint16) (*dns.Msg, error) {
	qerr := func(err error) error {
		return &QueryError{Type: dns.TypeToString[qtype], Name: name, Server: server, Err: err}
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(dns.DefaultMsgSize, false)
	var msg *dns.Msg
	for _, network := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: network, Timeout: timeout}
		var err error
		msg, _, err = c.ExchangeContext(ctx, m, server)
		if err != nil {
			if ctx.Err() != nil {
				return nil, qerr(ctx.Err())
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, qerr(fmt.Errorf("%w: no answer over %s within %v", ErrTimeout, network, timeout))
			}
			return nil, qerr(err)
		}
		if !msg.Truncated {
			break
		}
	}
	switch msg.Rcode {
	case dns.RcodeSuccess:
		return msg, nil
	case dns.RcodeNameError:
		return nil, qerr(ErrNXDomain)
	case dns.RcodeServerFailure:
		return nil, qerr(ErrServFail)
	default:
		return nil, qerr(fmt.Errorf("server answered %s", dns.RcodeToString[msg.Rcode]))
	}
}

// minTTL folds a record TTL (seconds) into a running minimum; negative
// means no record seen yet.
func minTTL(cur time.Duration, ttl uint32) time.Duration {
	d := time.Duration(ttl) * time.Second
	if cur < 0 || d < cur {
		return d
	}
	return cur
}
