package sdk

import (
	"fmt"
	"regexp"
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidateName checks a service name, node id or network name (what says
// which): 1 to 63 letters, digits, dots, dashes and underscores, starting
// with a letter or digit. The same rule holds in a config file and over
// the admin API.
func ValidateName(what, s string) error {
	if !namePattern.MatchString(s) {
		return fmt.Errorf("%q is not a valid %s: use 1 to 63 letters, digits, dots, dashes and underscores, starting with a letter or digit", s, what)
	}
	return nil
}
