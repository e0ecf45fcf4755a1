package primary

import (
	"container/list"
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wsedge/wsedge/appurl"
)

// OwnerResolver answers who owns a subdomain app's workspace; *Client is
// one.
type OwnerResolver interface {
	ResolveAppOwner(ctx context.Context, req appurl.Request) (uuid.UUID, error)
}

// Defaults of OwnerCacheOptions.
const (
	DefaultOwnerCacheSize   = 4096
	DefaultOwnerTTL         = 5 * time.Minute
	DefaultOwnerNegativeTTL = 30 * time.Second
	DefaultOwnerCallTimeout = 10 * time.Second
)

// OwnerCacheOptions configure an OwnerCache.
type OwnerCacheOptions struct {
	// Size bounds the entries kept (least recently used go first).
	Size int
	// TTL is how long an owner is trusted. Workspaces do not change
	// owners, but names can be re-used after a delete.
	TTL time.Duration
	// NegativeTTL is how long a 400/404 answer ("Application not found.")
	// is remembered, so unknown hosts do not cost a primary call each.
	NegativeTTL time.Duration
	// CallTimeout bounds a resolve call, which runs detached from the
	// callers waiting for it.
	CallTimeout time.Duration
	Now         func() time.Time
}

// OwnerCache resolves app owners through the primary, caching answers in
// a bounded LRU with expiry and making one call per app at a time.
// Transport failures and 5xx answers are not cached.
type OwnerCache struct {
	src  OwnerResolver
	opts OwnerCacheOptions

	mu      sync.Mutex
	lru     *list.List // of *ownerEntry, front = most recent
	entries map[string]*list.Element
	flights map[string]*ownerFlight

	// waiting, when set (tests), is called as a caller starts waiting
	// for a flight.
	waiting func()
}

type ownerEntry struct {
	key     string
	owner   uuid.UUID
	err     error
	expires time.Time
}

type ownerFlight struct {
	done  chan struct{}
	owner uuid.UUID
	err   error
}

// NewOwnerCache builds an empty cache.
func NewOwnerCache(src OwnerResolver, opts OwnerCacheOptions) *OwnerCache {
	if opts.Size <= 0 {
		opts.Size = DefaultOwnerCacheSize
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultOwnerTTL
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = DefaultOwnerNegativeTTL
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultOwnerCallTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &OwnerCache{src: src, opts: opts, lru: list.New(), entries: map[string]*list.Element{}, flights: map[string]*ownerFlight{}}
}

// ownerKey identifies a subdomain app; usernames and workspace names are
// case-insensitive in coderd.
func ownerKey(r appurl.Request) string {
	r = r.Normalize()
	return strings.Join([]string{
		string(r.AccessMethod), r.Prefix, strings.ToLower(r.UsernameOrID),
		strings.ToLower(r.WorkspaceNameOrID), r.AgentNameOrID, r.AppSlugOrPort,
	}, "\x00")
}

// Owner returns the owner of req's workspace, from the cache or the
// primary.
func (o *OwnerCache) Owner(ctx context.Context, req appurl.Request) (uuid.UUID, error) {
	key := ownerKey(req)
	now := o.opts.Now()
	o.mu.Lock()
	if el, ok := o.entries[key]; ok {
		e := el.Value.(*ownerEntry)
		if now.Before(e.expires) {
			o.lru.MoveToFront(el)
			o.mu.Unlock()
			return e.owner, e.err
		}
		o.removeLocked(el)
	}
	fl := o.flights[key]
	if fl == nil {
		fl = &ownerFlight{done: make(chan struct{})}
		o.flights[key] = fl
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.opts.CallTimeout)
		go func() {
			defer cancel()
			fl.owner, fl.err = o.src.ResolveAppOwner(fctx, req)
			o.finish(key, fl)
			close(fl.done)
		}()
	}
	o.mu.Unlock()
	if o.waiting != nil {
		o.waiting()
	}
	select {
	case <-fl.done:
		return fl.owner, fl.err
	case <-ctx.Done():
		return uuid.Nil, ctx.Err()
	}
}

// finish records a flight's answer if it is cacheable.
func (o *OwnerCache) finish(key string, fl *ownerFlight) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.flights, key)
	var ttl time.Duration
	switch {
	case fl.err == nil:
		ttl = o.opts.TTL
	case IsStatus(fl.err, http.StatusNotFound) || IsStatus(fl.err, http.StatusBadRequest):
		ttl = o.opts.NegativeTTL
	default:
		return
	}
	if el, ok := o.entries[key]; ok {
		o.removeLocked(el)
	}
	o.entries[key] = o.lru.PushFront(&ownerEntry{key: key, owner: fl.owner, err: fl.err, expires: o.opts.Now().Add(ttl)})
	for o.lru.Len() > o.opts.Size {
		o.removeLocked(o.lru.Back())
	}
}

func (o *OwnerCache) removeLocked(el *list.Element) {
	o.lru.Remove(el)
	delete(o.entries, el.Value.(*ownerEntry).key)
}

// Len is the number of cached answers.
func (o *OwnerCache) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lru.Len()
}
