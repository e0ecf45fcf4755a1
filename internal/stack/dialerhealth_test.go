package stack

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/wsedge/wsedge/primary"
)

// TestRegistrationHealthSaysHowLongItHasBeenFailing: /healthz-report's
// registration line names how long, and since when, registration has
// been failing, so an operator can tell a blip from an outage.
func TestRegistrationHealthSaysHowLongItHasBeenFailing(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	down := errors.New("primary: POST /api/v2/workspaceproxies/me/register: primary unavailable: connection refused")
	for _, tt := range []struct {
		name           string
		h              primary.RegistrationHealth
		errs, warnings []string
	}{
		{"healthy", primary.RegistrationHealth{Registered: true}, nil, nil},
		{"a few failures", primary.RegistrationHealth{Registered: true, ConsecutiveFailures: 3, LastError: down, FailingSince: since, FailingFor: 10*time.Second + 300*time.Millisecond},
			nil, []string{"Last 3 re-registrations with the primary failed for 10s (since 2026-01-02T03:04:05Z): " + down.Error()}},
		{"long outage", primary.RegistrationHealth{Registered: true, Unhealthy: true, ConsecutiveFailures: 14, LastError: down, FailingSince: since, FailingFor: 3*time.Minute + 20*time.Second},
			[]string{"Failed to re-register with the primary 14 times in a row for 3m20s (since 2026-01-02T03:04:05Z): " + down.Error()}, nil},
		{"deregistered", primary.RegistrationHealth{Deregistered: true, Unhealthy: true}, []string{"Not registered with the primary"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			errs, warnings := registrationHealth{func() primary.RegistrationHealth { return tt.h }}.CheckHealth(context.Background())
			if !reflect.DeepEqual(errs, tt.errs) || !reflect.DeepEqual(warnings, tt.warnings) {
				t.Errorf("errors %q warnings %q\nwant errors %q warnings %q", errs, warnings, tt.errs, tt.warnings)
			}
		})
	}
}
