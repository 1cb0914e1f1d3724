package sdk

// Type of a configuration attribute.
type Type string

const (
	TypeString     Type = "string"
	TypeNumber     Type = "number"
	TypeBool       Type = "bool"
	TypeDuration   Type = "duration" // a string such as "30s", checked by time.ParseDuration
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
