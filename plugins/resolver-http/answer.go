package resolverhttp

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/microhost/microhost/sdk"
)

// ErrNoNodes is returned (wrapped) for an answer that lists no node; it
// matches sdk.ErrNotFound.
var ErrNoNodes = fmt.Errorf("answer lists no nodes: %w", sdk.ErrNotFound)

// decodeAnswer parses and checks {"nodes":[{"address":"host:port","priority":N}]}
// strictly: unknown fields, wrong types, missing or malformed addresses and
// trailing data are errors naming the offending node. Nodes come back
// sorted by priority, duplicates dropped.
func decodeAnswer(body []byte) ([]sdk.Node, error) {
	var top struct {
		Nodes *[]json.RawMessage `json:"nodes"`
	}
	if err := decodeJSON(body, &top); err != nil {
		return nil, err
	}
	if top.Nodes == nil {
		return nil, errors.New(`answer has no "nodes" array`)
	}
	nodes := make([]sdk.Node, 0, len(*top.Nodes))
	for i, raw := range *top.Nodes {
		var n struct {
			Address  *string `json:"address"`
			Priority *int    `json:"priority"`
		}
		if err := decodeJSON(raw, &n); err != nil {
			return nil, fmt.Errorf("nodes[%d]: %w", i, err)
		}
		if n.Address == nil || *n.Address == "" {
			return nil, fmt.Errorf(`nodes[%d]: missing "address"`, i)
		}
		if err := checkHostPort(*n.Address); err != nil {
			return nil, fmt.Errorf("nodes[%d]: address %w", i, err)
		}
		node := sdk.Node{Address: *n.Address}
		if n.Priority != nil {
			node.Priority = *n.Priority
		}
		nodes = append(nodes, node)
	}
	slices.SortStableFunc(nodes, func(a, b sdk.Node) int { return cmp.Compare(a.Priority, b.Priority) })
	seen := map[string]bool{}
	nodes = slices.DeleteFunc(nodes, func(n sdk.Node) bool {
		dup := seen[n.Address]
		seen[n.Address] = true
		return dup
	})
	if len(nodes) == 0 {
		return nil, ErrNoNodes
	}
	return nodes, nil
}

// decodeJSON decodes one JSON value into v, rejecting unknown fields and
// trailing data, with errors in terms of the JSON document.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		return errors.New("empty answer, want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("malformed JSON: the answer ends early")
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("malformed JSON at byte %d: %v", syntaxErr.Offset, strings.TrimPrefix(err.Error(), "json: "))
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "value"
		}
		return fmt.Errorf("%s: want %s, got a JSON %s", field, jsonType(typeErr.Type.String()), typeErr.Value)
	default:
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON value at byte %d", dec.InputOffset())
	}
	return nil
}

// jsonType names a Go type by the JSON it decodes from.
func jsonType(goType string) string {
	switch strings.TrimLeft(goType, "*") {
	case "int":
		return "an integer"
	case "string":
		return "a string"
	case "[]json.RawMessage":
		return "an array"
	default:
		return "an object"
	}
}

// checkHostPort accepts host:port with a non-empty host and a port in 1–65535.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, strings.TrimPrefix(err.Error(), "address "+addr+": "))
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if strings.ContainsAny(host, " \t\r\n/?#@") {
		return fmt.Errorf("%q: host %q is not a host name or IP address", addr, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number between 1 and 65535", addr, port)
	}
	return nil
}
