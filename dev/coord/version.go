package devcoord

import (
	"fmt"
	"strconv"
	"strings"
)

// The tailnet API version this coordinator implements: any 2.x up to 2.5 is
// accepted, as by the coderd version docs/protocol.md#coordination describes.
const (
	currentMajor = 2
	currentMinor = 5
)

// validateVersion mirrors coderd's apiversion check and its error texts,
// which end up in the 400 response's validation detail.
func validateVersion(v string) error {
	parts := strings.Split(v, ".")
	if len(parts) != 2 {
		return fmt.Errorf("invalid version string: %s", v)
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return fmt.Errorf("invalid major version: %s", v)
	}
	minor, err := strconv.Atoi(parts[1])
	if err != nil {
		return fmt.Errorf("invalid minor version: %s", v)
	}
	switch {
	case major > currentMajor:
		return fmt.Errorf("server is at version %d.%d, behind requested major version %s", currentMajor, currentMinor, v)
	case major == currentMajor && minor > currentMinor:
		return fmt.Errorf("server is at version %d.%d, behind requested minor version %s", currentMajor, currentMinor, v)
	case major == currentMajor:
		return nil
	default:
		return fmt.Errorf("version %s is no longer supported", v)
	}
}
