package config

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/sdk"
)

// DecodeComponentConfig validates a component's config { } body against the
// schema its plugin published (see sdk.Schema.Decode), with the diagnostics
// sorted by position.
func DecodeComponentConfig(body hcl.Body, schema sdk.Schema, ctx *hcl.EvalContext, baseDir string) (json.RawMessage, hcl.Diagnostics) {
	raw, diags := schema.Decode(body, ctx, baseDir)
	sortDiagnostics(diags)
	return raw, diags
}

// DecodeComponents validates every component's config { } block against
// the schema schemaOf returns for it and returns the decoded blocks by
// component name. A schemaOf error (an unknown builtin, a plugin that does
// not start) is reported at the plugin or address argument, else at the
// component block.
func (c *Config) DecodeComponents(schemaOf func(*Component) (sdk.Schema, error)) (map[string]json.RawMessage, hcl.Diagnostics) {
	out := make(map[string]json.RawMessage)
	var diags hcl.Diagnostics
	for _, comp := range c.Components() {
		if comp.Address != "" && !comp.HasConfig {
			continue
		}
		schema, err := schemaOf(comp)
		if err != nil {
			rng := comp.Range("plugin")
			if comp.Address != "" {
				rng = comp.Range("address")
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Cannot load %s %q", comp.Kind, comp.Name),
				Detail:   err.Error(),
				Subject:  rng.Ptr(),
			})
			continue
		}
		raw, cdiags := DecodeComponentConfig(comp.Config, schema, c.EvalContext, c.Dir)
		diags = append(diags, cdiags...)
		if !cdiags.HasErrors() {
			out[comp.Name] = raw
		}
	}
	sortDiagnostics(diags)
	return out, diags
}

// AttributeRange returns where argument name is set in body (its value),
// or the body itself when it is not set.
func AttributeRange(body hcl.Body, name string) hcl.Range {
	if body == nil {
		return hcl.Range{}
	}
	if name != "" {
		content, _, _ := body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: name}}})
		if attr := content.Attributes[name]; attr != nil {
			return attr.Expr.Range()
		}
	}
	return body.MissingItemRange()
}

// SDKDiagnostics converts diagnostics a plugin returned from Configure into
// hcl.Diagnostics, each pointing at the argument it names; a diagnostic
// about the block as a whole (or an argument that is not set) points at
// block, normally the config block's header.
func SDKDiagnostics(body hcl.Body, block hcl.Range, d sdk.Diagnostics) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, x := range d {
		rng := block
		if x.Attribute != "" {
			if r := AttributeRange(body, x.Attribute); r != body.MissingItemRange() {
				rng = r
			}
		}
		sev := hcl.DiagError
		if x.Severity == sdk.SeverityWarning {
			sev = hcl.DiagWarning
		}
		out = append(out, &hcl.Diagnostic{Severity: sev, Summary: x.Summary, Detail: x.Detail, Subject: rng.Ptr()})
	}
	return out
}

// WriteDiagnostics prints diagnostics the way Terraform does: severity,
// summary, file:line and the offending source lines, then the detail.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, files map[string]*hcl.File) error {
	return hcl.NewDiagnosticTextWriter(w, files, 0, false).WriteDiagnostics(diags)
}

// absentBody stands in for a config { } block that was left out. It is
// empty, but its MissingItemRange is the component block, so a "missing
// required argument" diagnostic points at the component.
type absentBody struct{ rng hcl.Range }

func (b absentBody) Content(s *hcl.BodySchema) (*hcl.BodyContent, hcl.Diagnostics) {
	return hcl.EmptyBody().Content(s)
}

func (b absentBody) PartialContent(s *hcl.BodySchema) (*hcl.BodyContent, hcl.Body, hcl.Diagnostics) {
	return hcl.EmptyBody().PartialContent(s)
}

func (b absentBody) JustAttributes() (hcl.Attributes, hcl.Diagnostics) {
	return hcl.EmptyBody().JustAttributes()
}

func (b absentBody) MissingItemRange() hcl.Range { return b.rng }
