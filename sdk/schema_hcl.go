package sdk

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// ctyType maps an attribute type to the HCL type it is decoded as.
func (t Type) ctyType() (cty.Type, error) {
	switch t {
	case TypeString, TypeDuration:
		return cty.String, nil
	case TypeNumber:
		return cty.Number, nil
	case TypeBool:
		return cty.Bool, nil
	case TypeListString:
		return cty.List(cty.String), nil
	case TypeMapString:
		return cty.Map(cty.String), nil
	}
	return cty.NilType, fmt.Errorf("unknown attribute type %q", t)
}

// Spec returns the hcldec spec of a config { } block with this schema.
func (s Schema) Spec() (hcldec.ObjectSpec, error) {
	spec := hcldec.ObjectSpec{}
	for _, a := range s.Attributes {
		ty, err := a.Type.ctyType()
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", a.Name, err)
		}
		spec[a.Name] = &hcldec.AttrSpec{Name: a.Name, Type: ty, Required: a.Required}
	}
	return spec, nil
}

// Decode validates a config { } body against the schema and returns it as
// the JSON object Configure expects. Every problem is reported at once, at
// the range of the argument it is about; unknown arguments get hcl's "did
// you mean" suggestion.
func (s Schema) Decode(body hcl.Body, ctx *hcl.EvalContext) (json.RawMessage, hcl.Diagnostics) {
	spec, err := s.Spec()
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid plugin schema", Detail: err.Error()}}
	}
	val, diags := hcldec.Decode(body, spec, ctx)
	if diags.HasErrors() {
		return nil, diags
	}
	out := map[string]json.RawMessage{}
	for _, a := range s.Attributes {
		v := val.GetAttr(a.Name)
		if v.IsNull() {
			continue
		}
		if a.Type == TypeDuration {
			if _, err := time.ParseDuration(v.AsString()); err != nil {
				rng := hcldec.SourceRange(body, spec[a.Name])
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid duration",
					Detail:   fmt.Sprintf("%q is not a duration for %q: write it like \"500ms\", \"30s\" or \"1h\".", v.AsString(), a.Name),
					Subject:  &rng,
				})
				continue
			}
		}
		raw, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			rng := hcldec.SourceRange(body, spec[a.Name])
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value", Detail: err.Error(), Subject: &rng})
			continue
		}
		out[a.Name] = raw
	}
	if diags.HasErrors() {
		return nil, diags
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot encode configuration", Detail: err.Error()}}
	}
	return raw, diags
}

// AttributeRange is where a config { } argument was written, for pointing a
// component's diagnostic at it; the block's own range if it is not there.
func (s Schema) AttributeRange(body hcl.Body, name string, block hcl.Range) hcl.Range {
	spec, err := s.Spec()
	if err != nil || spec[name] == nil {
		return block
	}
	rng := hcldec.SourceRange(body, spec[name])
	if rng.Filename == "" {
		return block
	}
	return rng
}
