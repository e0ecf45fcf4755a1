package stack

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// registerCollectors registers components' collectors with reg (nil: no
// metrics). A collector already registered (a second service of the same
// kind on one registry) is left as it is.
func registerCollectors(reg prometheus.Registerer, log *slog.Logger, cs ...prometheus.Collector) {
	if reg == nil {
		return
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				log.Warn("metrics not registered", "error", err)
			}
		}
	}
}
