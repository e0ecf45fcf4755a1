package tokens

import (
	"sync"
	"time"
)

// verifiedCache remembers tokens that verified, until they expire, so a
// browser presenting the same cookie on every request pays for JOSE
// parsing and HMAC once per token instead of once per request. An entry
// names the key that verified it: a hit counts only while the key source
// still holds that key (Verifier.VerifyToken), so a key the primary
// withdraws stops its tokens at once. It is bounded: past maxEntries it
// drops expired entries, and if that is not enough, everything.
type verifiedCache struct {
	mu         sync.RWMutex
	entries    map[string]cachedToken
	maxEntries int
}

type cachedToken struct {
	tok SignedToken
	// until is when the entry stops being usable: the token's expiry plus
	// leeway, or its key's deletion if sooner.
	until time.Time
	// kid and secret identify the key that verified the token.
	kid    string
	secret []byte
}

const defaultCacheEntries = 16384

func (c *verifiedCache) get(raw string, now time.Time) (cachedToken, bool) {
	c.mu.RLock()
	e, ok := c.entries[raw]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return cachedToken{}, false
	}
	return e, true
}

func (c *verifiedCache) drop(raw string) {
	c.mu.Lock()
	delete(c.entries, raw)
	c.mu.Unlock()
}

func (c *verifiedCache) put(raw string, e cachedToken, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[string]cachedToken)
	}
	max := c.maxEntries
	if max == 0 {
		max = defaultCacheEntries
	}
	if len(c.entries) >= max {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= max {
			clear(c.entries)
		}
	}
	c.entries[raw] = e
}
