package resolverhttp

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/microhost/microhost/sdk"
)

func TestDecodeAnswer(t *testing.T) {
	nodes, err := decodeAnswer([]byte(`{"nodes":[
		{"address":"b.example:9000","priority":5},
		{"address":"10.0.0.1:9000"},
		{"address":"[fd00::1]:9001","priority":1},
		{"address":"10.0.0.1:9000","priority":3}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.Node{
		{Address: "10.0.0.1:9000", Priority: 0},
		{Address: "[fd00::1]:9001", Priority: 1},
		{Address: "b.example:9000", Priority: 5},
	}
	if !slices.Equal(nodes, want) {
		t.Errorf("got %+v, want %+v", nodes, want)
	}
}

func TestDecodeAnswerErrors(t *testing.T) {
	cases := []struct{ body, want string }{
		{``, "empty answer"},
		{`{"nodes":[`, "ends early"},
		{`{"nodes":[}`, "malformed JSON at byte"},
		{`<html>`, "malformed JSON at byte 1"},
		{`[]`, "value: want an object, got a JSON array"},
		{`{}`, `no "nodes" array`},
		{`{"nodes":{}}`, "nodes: want an array, got a JSON object"},
		{`{"nodes":[],"extra":1}`, `unknown field "extra"`},
		{`{"nodes":[]} {}`, "trailing data"},
		{`{"nodes":[{"address":"a:1","priority":"high"}]}`, "nodes[0]: priority: want an integer, got a JSON string"},
		{`{"nodes":[{"address":"a:1","priority":1.5}]}`, "nodes[0]: priority: want an integer, got a JSON number"},
		{`{"nodes":[{"address":"a:1"},{"address":42}]}`, "nodes[1]: address: want a string, got a JSON number"},
		{`{"nodes":[{"address":"a:1"},{"priority":1}]}`, `nodes[1]: missing "address"`},
		{`{"nodes":[null]}`, `nodes[0]: missing "address"`},
		{`{"nodes":[{"address":"a:1","weight":3}]}`, `nodes[0]: unknown field "weight"`},
		{`{"nodes":[{"address":"nohostport"}]}`, `nodes[0]: address "nohostport" is not host:port`},
		{`{"nodes":[{"address":":80"}]}`, `has no host`},
		{`{"nodes":[{"address":"a:0"}]}`, `port "0"`},
		{`{"nodes":[{"address":"a:http"}]}`, `port "http"`},
		{`{"nodes":[{"address":"a b:1"}]}`, `not a host name`},
	}
	for _, c := range cases {
		_, err := decodeAnswer([]byte(c.body))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.body, err, c.want)
		}
	}
	if _, err := decodeAnswer([]byte(`{"nodes":[]}`)); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("empty node list: error %v, want one matching sdk.ErrNotFound", err)
	}
}

func FuzzDecodeAnswer(f *testing.F) {
	f.Add([]byte(`{"nodes":[{"address":"10.0.0.1:9000","priority":2},{"address":"[::1]:1"}]}`))
	f.Add([]byte(`{"nodes":[{"address":"a:1","priority":"x"}]}`))
	f.Add([]byte(`{"nodes":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		nodes, err := decodeAnswer(body)
		if err != nil {
			if len(nodes) != 0 {
				t.Fatalf("error %v with nodes %v", err, nodes)
			}
			return
		}
		for i, n := range nodes {
			if err := checkHostPort(n.Address); err != nil {
				t.Fatalf("accepted bad address: %v", err)
			}
			if i > 0 && nodes[i-1].Priority > n.Priority {
				t.Fatalf("not sorted by priority: %+v", nodes)
			}
		}
	})
}
