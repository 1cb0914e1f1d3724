package config

import (
	"fmt"
	"os"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

var variableSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "default"},
		{Name: "description"},
		{Name: "type"},
	},
}

// evalContext decodes the variable blocks and builds the context that
// every other expression is evaluated in. A variable that failed to decode
// is unknown, so expressions using it are skipped instead of reporting the
// same problem again.
func evalContext(blocks hcl.Blocks, vars map[string]string) (*hcl.EvalContext, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	values := make(map[string]cty.Value)
	declared := make(map[string]*hcl.Block)
	for _, block := range blocks {
		name := block.Labels[0]
		if !hclsyntax.ValidIdentifier(name) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid variable name",
				Detail:   fmt.Sprintf("%q is not a valid variable name: use letters, digits, underscores and dashes, starting with a letter.", name),
				Subject:  block.LabelRanges[0].Ptr(),
			})
			continue
		}
		if prev, dup := declared[name]; dup {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate variable",
				Detail:   fmt.Sprintf("A variable named %q was already declared at %s.", name, prev.DefRange),
				Subject:  block.DefRange.Ptr(),
			})
			continue
		}
		declared[name] = block
		val, vdiags := variableValue(block, vars)
		diags = append(diags, vdiags...)
		values[name] = val
	}

	undeclared := make([]string, 0)
	for name := range vars {
		if _, ok := declared[name]; !ok {
			undeclared = append(undeclared, name)
		}
	}
	sort.Strings(undeclared)
	for _, name := range undeclared {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Value for undeclared variable",
			Detail:   fmt.Sprintf("A value was given for var.%s, but the configuration declares no variable %q. Add a variable %q { } block, or drop the value.", name, name, name),
		})
	}

	return &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(values)},
		Functions: functions(),
	}, diags
}

// variableValue returns the value of one variable: from vars, else from
// the environment, else its default.
func variableValue(block *hcl.Block, vars map[string]string) (cty.Value, hcl.Diagnostics) {
	name := block.Labels[0]
	content, diags := block.Body.Content(variableSchema)
	if diags.HasErrors() {
		return cty.DynamicVal, diags
	}

	ty := cty.DynamicPseudoType
	if attr, ok := content.Attributes["type"]; ok {
		t, tdiags := typeexpr.TypeConstraint(attr.Expr)
		diags = append(diags, tdiags...)
		if tdiags.HasErrors() {
			return cty.DynamicVal, diags
		}
		ty = t
	}
	if attr, ok := content.Attributes["description"]; ok {
		var d decoder
		d.str(attr)
		diags = append(diags, d.diags...)
	}

	if raw, ok := vars[name]; ok {
		return parseVariable(name, raw, ty, "given for")
	}
	if raw, ok := os.LookupEnv(VarEnvPrefix + name); ok {
		return parseVariable(name, raw, ty, "in "+VarEnvPrefix+name+" for")
	}

	attr, ok := content.Attributes["default"]
	if !ok {
		return cty.DynamicVal, append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "No value for required variable",
			Detail:   fmt.Sprintf("Variable %q has no default, so it must be given a value, for example in the environment variable %s%s.", name, VarEnvPrefix, name),
			Subject:  block.DefRange.Ptr(),
		})
	}
	// Defaults are constants: no variables or functions.
	val, vdiags := attr.Expr.Value(nil)
	diags = append(diags, vdiags...)
	if vdiags.HasErrors() {
		return cty.DynamicVal, diags
	}
	conv, err := convert.Convert(val, ty)
	if err != nil {
		return cty.DynamicVal, append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid default value for variable",
			Detail:   fmt.Sprintf("This default value is not compatible with the variable's type constraint: %s.", err),
			Subject:  attr.Expr.Range().Ptr(),
		})
	}
	return conv, diags
}

// parseVariable converts a value given as a string. A string (or untyped)
// variable takes it literally; any other type parses it as an HCL
// expression, so "8085", "true" and `["a", "b"]` work.
func parseVariable(name, raw string, ty cty.Type, origin string) (cty.Value, hcl.Diagnostics) {
	if ty == cty.String || ty == cty.DynamicPseudoType {
		return cty.StringVal(raw), nil
	}
	invalid := func(why string) (cty.Value, hcl.Diagnostics) {
		return cty.DynamicVal, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid value for variable",
			Detail: fmt.Sprintf("The value %q %s var.%s is not a %s: %s. Write it as an HCL value, such as 8085, true or [\"a\", \"b\"].",
				raw, origin, name, typeexpr.TypeString(ty), why),
		}}
	}
	expr, diags := hclsyntax.ParseExpression([]byte(raw), "<value for var."+name+">", hcl.InitialPos)
	if diags.HasErrors() {
		return invalid(diags[0].Summary)
	}
	// A nil context: the value must be a constant.
	val, diags := expr.Value(nil)
	if diags.HasErrors() {
		return invalid(diags[0].Summary)
	}
	conv, err := convert.Convert(val, ty)
	if err != nil {
		return invalid(err.Error())
	}
	return conv, nil
}

// functions are the functions available in expressions.
func functions() map[string]function.Function {
	return map[string]function.Function{
		"env":       envFunc,
		"abs":       stdlib.AbsoluteFunc,
		"coalesce":  stdlib.CoalesceFunc,
		"concat":    stdlib.ConcatFunc,
		"format":    stdlib.FormatFunc,
		"join":      stdlib.JoinFunc,
		"length":    stdlib.LengthFunc,
		"lower":     stdlib.LowerFunc,
		"max":       stdlib.MaxFunc,
		"min":       stdlib.MinFunc,
		"replace":   stdlib.ReplaceFunc,
		"split":     stdlib.SplitFunc,
		"tobool":    stdlib.MakeToFunc(cty.Bool),
		"tonumber":  stdlib.MakeToFunc(cty.Number),
		"tostring":  stdlib.MakeToFunc(cty.String),
		"trimspace": stdlib.TrimSpaceFunc,
		"upper":     stdlib.UpperFunc,
	}
}

// envFunc is env(NAME) or env(NAME, DEFAULT): the value of an environment
// variable. An unset variable without a default is an error rather than "",
// so a typo does not turn into a confusing empty address later.
var envFunc = function.New(&function.Spec{
	Description: "Returns the value of an environment variable, or the default when it is not set.",
	Params:      []function.Parameter{{Name: "name", Type: cty.String}},
	VarParam:    &function.Parameter{Name: "default", Type: cty.String},
	Type:        function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		if len(args) > 2 {
			return cty.NilVal, function.NewArgErrorf(2, "env takes a name and at most one default")
		}
		name := args[0].AsString()
		if v, ok := os.LookupEnv(name); ok {
			return cty.StringVal(v), nil
		}
		if len(args) == 2 {
			return args[1], nil
		}
		return cty.NilVal, fmt.Errorf("environment variable %s is not set; give a default as env(%q, \"...\")", name, name)
	},
})
