package sdk

import (
	"errors"
	"fmt"
)

// Type of a configuration attribute.
type Type string

const (
	TypeString   Type = "string"
	TypeNumber   Type = "number"
	TypeBool     Type = "bool"
	TypeDuration Type = "duration" // a string such as "30s", checked by time.ParseDuration
	// TypePath is a file path; a relative one is made absolute against the
	// directory of the file it was written in, not the plugin's working directory.
	TypePath       Type = "path"
	TypeListString Type = "list(string)"
	TypeMapString  Type = "map(string)"
)

// Attribute describes one argument of a component's config { } block.
type Attribute struct {
	Name        string `json:"name"`
	Type        Type   `json:"type"`
	Required    bool   `json:"required,omitempty"`
	Description string `json:"description,omitempty"`
	// Default is shown to users; the component applies it itself.
	Default string `json:"default,omitempty"`
}

// Schema describes a component's config { } block.
type Schema struct {
	Attributes []Attribute `json:"attributes"`
}

// Validate checks that the schema is well formed: every attribute named
// once, with a type the host knows.
func (s Schema) Validate() error {
	seen := map[string]bool{}
	var errs []error
	for _, a := range s.Attributes {
		switch {
		case a.Name == "":
			errs = append(errs, errors.New("an attribute has no name"))
		case seen[a.Name]:
			errs = append(errs, fmt.Errorf("attribute %q is declared twice", a.Name))
		}
		seen[a.Name] = true
		if _, ok := a.Type.ctyType(); !ok {
			errs = append(errs, fmt.Errorf("attribute %q has unknown type %q", a.Name, a.Type))
		}
	}
	return errors.Join(errs...)
}
