package sdk

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// ctyType is the cty type an attribute type is decoded as. A duration is a
// string that must also parse with time.ParseDuration.
func (t Type) ctyType() (cty.Type, bool) {
	switch t {
	case TypeString, TypeDuration, TypePath:
		return cty.String, true
	case TypeNumber:
		return cty.Number, true
	case TypeBool:
		return cty.Bool, true
	case TypeListString:
		return cty.List(cty.String), true
	case TypeMapString:
		return cty.Map(cty.String), true
	}
	return cty.NilType, false
}

// Decode validates a config { } body against the schema and returns it as
// the JSON object Configure expects, holding the arguments that were set
// (durations stay strings such as "30s"). Every problem is reported at
// once at the argument it is about; unknown arguments get hcl's "Did you
// mean" suggestion. Relative paths (TypePath) are made absolute against
// baseDir. The host decodes its file's blocks with it, and a standalone
// component its own config file.
func (s Schema) Decode(body hcl.Body, ctx *hcl.EvalContext, baseDir string) (json.RawMessage, hcl.Diagnostics) {
	if body == nil {
		body = hcl.EmptyBody()
	}
	var diags hcl.Diagnostics
	bodySchema := &hcl.BodySchema{}
	types := make(map[string]cty.Type, len(s.Attributes))
	for _, a := range s.Attributes {
		ty, ok := a.Type.ctyType()
		if !ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid plugin schema",
				Detail:   fmt.Sprintf("The plugin declares argument %q with type %q, which microhost does not know. This is a bug in the plugin.", a.Name, a.Type),
				Subject:  body.MissingItemRange().Ptr(),
			})
			continue
		}
		types[a.Name] = ty
		// Required arguments are checked below, to point at this body even
		// when the config block was left out.
		bodySchema.Attributes = append(bodySchema.Attributes, hcl.AttributeSchema{Name: a.Name})
	}

	content, cdiags := body.Content(bodySchema)
	diags = append(diags, cdiags...)
	out := make(map[string]json.RawMessage)
	for _, a := range s.Attributes {
		ty, known := types[a.Name]
		attr := content.Attributes[a.Name]
		if !known {
			continue
		}
		if attr == nil {
			if a.Required {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Missing required argument",
					Detail:   fmt.Sprintf("The argument %q%s is required, but no definition was found.", a.Name, attributeHint(a)),
					Subject:  body.MissingItemRange().Ptr(),
				})
			}
			continue
		}
		var adiags hcl.Diagnostics
		val, ok := EvalAttribute(attr, ty, ctx, &adiags)
		diags = append(diags, adiags...)
		if !ok {
			if a.Required && !adiags.HasErrors() {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Missing required argument",
					Detail:   fmt.Sprintf("The argument %q is required and must not be null.", a.Name),
					Subject:  attr.Expr.Range().Ptr(),
				})
			}
			continue
		}
		if a.Type == TypeDuration {
			if _, err := ParseDuration(val.AsString()); err != nil {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid duration",
					Detail:   err.Error() + ".",
					Subject:  attr.Expr.Range().Ptr(),
				})
				continue
			}
		}
		if a.Type == TypePath && val.AsString() != "" && !filepath.IsAbs(val.AsString()) {
			val = cty.StringVal(filepath.Join(baseDir, val.AsString()))
		}
		raw, err := ctyjson.Marshal(val, ty)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid attribute value",
				Detail:   fmt.Sprintf("The value of %q cannot be encoded: %s.", a.Name, err),
				Subject:  attr.Expr.Range().Ptr(),
			})
			continue
		}
		out[a.Name] = raw
	}
	if diags.HasErrors() {
		return nil, diags
	}
	raw, err := json.Marshal(out)
	if err != nil { // cannot happen: every value is valid JSON already
		return nil, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot encode configuration", Detail: err.Error()})
	}
	return raw, diags
}

func attributeHint(a Attribute) string {
	if a.Description == "" {
		return ""
	}
	return " (" + a.Description + ")"
}

// EvalAttribute evaluates attr as type ty, appending problems to diags. It
// returns false when there is nothing to use: an error (already reported),
// a null (meaning "unset"), or an unknown value left by a variable that
// failed to decode.
func EvalAttribute(attr *hcl.Attribute, ty cty.Type, ctx *hcl.EvalContext, diags *hcl.Diagnostics) (cty.Value, bool) {
	val, vdiags := attr.Expr.Value(ctx)
	*diags = append(*diags, vdiags...)
	if vdiags.HasErrors() || val.IsNull() || !val.IsWhollyKnown() {
		return cty.NilVal, false
	}
	conv, err := convert.Convert(val, ty)
	if err != nil {
		*diags = append(*diags, &hcl.Diagnostic{
			Severity:    hcl.DiagError,
			Summary:     "Incorrect attribute value type",
			Detail:      fmt.Sprintf("Inappropriate value for attribute %q: %s.", attr.Name, err),
			Subject:     attr.Expr.Range().Ptr(),
			Expression:  attr.Expr,
			EvalContext: ctx,
		})
		return cty.NilVal, false
	}
	// A list or map may hold null elements, which no Go string can.
	if !conv.Type().IsPrimitiveType() && conv.LengthInt() > 0 {
		for it := conv.ElementIterator(); it.Next(); {
			if _, elem := it.Element(); elem.IsNull() {
				*diags = append(*diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid attribute value",
					Detail:   fmt.Sprintf("The elements of %q must not be null.", attr.Name),
					Subject:  attr.Expr.Range().Ptr(),
				})
				return cty.NilVal, false
			}
		}
	}
	return conv, true
}

// ParseDuration is time.ParseDuration with an error that says how to fix it.
func ParseDuration(s string) (time.Duration, error) {
	dur, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: write a number followed by a unit (ns, us, ms, s, m, h), such as \"30s\", \"500ms\" or \"1m30s\"", s)
	}
	return dur, nil
}
