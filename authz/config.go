package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"

	"github.com/wsedge/wsedge/appurl"
	"github.com/wsedge/wsedge/tokens"
)

// Config is what the Check pipeline needs to know about this proxy.
type Config struct {
	// AccessURL is the proxy's public URL: path apps and terminals live there.
	AccessURL *url.URL
	// DashboardURL is the Coder primary's URL (error pages link back to it).
	DashboardURL *url.URL
	// WildcardHostname is the subdomain-app pattern such as
	// "*.apps.example.com"; empty disables subdomain apps.
	WildcardHostname string
	// PathAppsDisabled refuses path apps with Coder's 403 page.
	PathAppsDisabled bool
	// Cookies holds the Secure/SameSite settings of the cookies authz sets.
	Cookies tokens.CookieConfig
	// TrustedProxies are the peers whose X-Forwarded-Host is believed. Empty
	// means the Host Envoy received is always used.
	TrustedProxies []netip.Prefix
	// XFFTrustedHops mirrors Envoy's xff_num_trusted_hops: how many
	// right-most X-Forwarded-For entries were added by trusted proxies.
	XFFTrustedHops int
	// Version is the build version authz's answers carry outside
	// subdomain apps, as Coder's proxy's do; empty means "dev".
	Version string
}

// compiled is Config with everything parsed once.
type compiled struct {
	Config
	router          appurl.Router
	dashboardHost   string
	subdomainCookie string
}

func compile(c Config) (*compiled, error) {
	if c.AccessURL == nil || c.AccessURL.Host == "" {
		return nil, errors.New("authz: access URL is required")
	}
	if c.AccessURL.Scheme != "http" && c.AccessURL.Scheme != "https" {
		return nil, fmt.Errorf("authz: access URL scheme %q must be http or https", c.AccessURL.Scheme)
	}
	if c.DashboardURL == nil || c.DashboardURL.Host == "" {
		return nil, errors.New("authz: dashboard (primary) URL is required")
	}
	router, err := appurl.NewRouter(c.AccessURL, c.DashboardURL, c.WildcardHostname)
	if err != nil {
		return nil, err // appurl names itself
	}
	cc := &compiled{
		Config:        c,
		dashboardHost: router.DashboardHost,
		router:        router,
	}
	if c.WildcardHostname != "" {
		cc.subdomainCookie = tokens.SubdomainAppSessionCookie(c.WildcardHostname)
	}
	if cc.Version == "" {
		cc.Version = "dev"
	}
	return cc, nil
}
