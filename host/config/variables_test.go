package config

import (
	"reflect"
	"strings"
	"testing"
)

const varsSrc = `
variable "network" {
  description = "network to join"
  default     = "from-default"
}
variable "port" {
  type    = number
  default = 8085
}
variable "peers" {
  type    = list(string)
  default = []
}
node {
  network = var.network
  listen  = "127.0.0.1:${var.port}"
  peers   = var.peers
}
` + minimal

func TestVariablePrecedence(t *testing.T) {
	cases := []struct {
		name        string
		env         map[string]string
		vars        map[string]string
		wantNetwork string
	}{
		{"default", nil, nil, "from-default"},
		{"environment", map[string]string{"MICROHOST_VAR_network": "from-env"}, nil, "from-env"},
		{"vars beat environment", map[string]string{"MICROHOST_VAR_network": "from-env"}, map[string]string{"network": "from-vars"}, "from-vars"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg := mustParse(t, t.TempDir(), varsSrc, tc.vars)
			if cfg.Node.Network != tc.wantNetwork {
				t.Errorf("network = %q, want %q", cfg.Node.Network, tc.wantNetwork)
			}
		})
	}
}

func TestTypedVariablesParseStrings(t *testing.T) {
	t.Setenv("MICROHOST_VAR_peers", `["10.0.0.1:8085", "10.0.0.2:8085"]`)
	cfg := mustParse(t, t.TempDir(), varsSrc, map[string]string{"port": "9000"})
	if cfg.Node.Listen != "127.0.0.1:9000" {
		t.Errorf("listen = %q", cfg.Node.Listen)
	}
	if want := []string{"10.0.0.1:8085", "10.0.0.2:8085"}; !reflect.DeepEqual(cfg.Node.Peers, want) {
		t.Errorf("peers = %q, want %q", cfg.Node.Peers, want)
	}
}

func TestVariableErrors(t *testing.T) {
	cases := []struct {
		name, src string
		vars      map[string]string
		want      []string
	}{
		{"value does not fit type", varsSrc, map[string]string{"port": "eighty"}, []string{`"eighty" given for var.port is not a number: Variables not allowed`}},
		{"value does not parse", varsSrc, map[string]string{"port": "80 +"}, []string{"Invalid value for variable"}},
		{"list does not fit number", varsSrc, map[string]string{"port": "[1]"}, []string{"Invalid value for variable"}},
		{"undeclared value", varsSrc, map[string]string{"nope": "x"}, []string{"Value for undeclared variable"}},
		{"no value", `variable "x" {}` + minimal, nil, []string{"No value for required variable"}},
		{"default of wrong type", `variable "x" {
  type    = number
  default = "abc"
}` + minimal, nil, []string{"Invalid default value for variable"}},
		{"default uses a variable", `variable "x" { default = var.y }` + minimal, nil, []string{"Variables not allowed"}},
		{"duplicate", `variable "x" { default = 1 }
variable "x" { default = 2 }` + minimal, nil, []string{"Duplicate variable"}},
		{"bad type expression", `variable "x" {
  type    = strin
  default = "a"
}` + minimal, nil, []string{"Invalid type specification"}},
		{"unknown argument", `variable "x" { defualt = 1 }` + minimal, nil, []string{`Did you mean "default"?`}},
		// A broken variable is reported once, not again where it is used.
		{"no cascade", `variable "x" {}
node { network = var.x }` + minimal, nil, []string{"No value for required variable"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := parseErrors(t, tc.src, tc.vars)
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(errs), len(tc.want), strings.Join(errs, "\n"))
			}
			for i, want := range tc.want {
				if !strings.Contains(errs[i], want) {
					t.Errorf("error %d = %q, want it to contain %q", i, errs[i], want)
				}
			}
		})
	}
}

func TestEnvFunction(t *testing.T) {
	t.Setenv("MH_TEST_NETWORK", "prod")
	cfg := mustParse(t, t.TempDir(), `node {
  network = env("MH_TEST_NETWORK")
  id      = env("MH_TEST_UNSET_VARIABLE", "fallback")
  http    = upper(env("MH_TEST_UNSET_VARIABLE", "localhost:8087"))
}`+minimal, nil)
	if cfg.Node.Network != "prod" || cfg.Node.ID != "fallback" || cfg.Node.HTTP != "LOCALHOST:8087" {
		t.Errorf("node = %+v", cfg.Node)
	}

	errs := parseErrors(t, `node {
  network = env("MH_TEST_UNSET_VARIABLE")
}`+minimal, nil)
	if len(errs) != 1 || !strings.HasPrefix(errs[0], "2: Error in function call") || !strings.Contains(errs[0], "MH_TEST_UNSET_VARIABLE is not set") {
		t.Errorf("errors = %q", errs)
	}
	errs = parseErrors(t, `node {
  network = env("A", "b", "c")
}`+minimal, nil)
	if len(errs) != 1 || !strings.Contains(errs[0], "at most one default") {
		t.Errorf("errors = %q", errs)
	}
}
