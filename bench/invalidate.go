package bench

import (
	"context"
	"fmt"
	"strings"

	"github.com/maypok86/otter/v2"
	"github.com/qcache-go/qcache"
	"github.com/viccon/sturdyc"
)

// Prefix is W5's setting: groups*perGroup entries whose keys are a group,
// then an id. Invalidate(g) ends the freshness of group g's entries, each
// library in its own way: qcache marks them stale (Client.Invalidate with a
// key prefix and RefetchNone: data kept, next Get refetches); the others
// have no stale state, so they delete them (otter and sfmap while
// iterating, sturdyc after listing its keys). Restore(g) makes them fresh
// again, outside the timed part, so that every round does the same work.
type Prefix interface {
	Invalidate(ctx context.Context, group int) (int, error) // returns how many entries it hit
	Restore(group int)
	Fresh(group, id int) bool
	Close()
}

// PrefixKey is the string key of (group, id) for the libraries keyed by
// strings: "g042/0000123"; the group prefix is "g042/".
func PrefixKey(group, id int) string { return fmt.Sprintf("%s%07d", GroupPrefix(group), id) }

// GroupPrefix is the string prefix of a group's keys.
func GroupPrefix(group int) string { return fmt.Sprintf("g%03d/", group) }

// NewPrefix fills lib's cache with groups*perGroup entries.
func NewPrefix(lib string, groups, perGroup int) Prefix {
	switch lib {
	case Qcache:
		return newQcachePrefix(groups, perGroup)
	case Otter:
		p := &otterPrefix{perGroup: perGroup, c: otter.Must(&otter.Options[string, string]{
			ExpiryCalculator: otter.ExpiryWriting[string, string](TTL),
		})}
		fill(groups, p.Restore)
		return p
	case Sturdyc:
		p := &sturdycPrefix{perGroup: perGroup, c: sturdyc.New[string](SturdycCapacity(groups*perGroup), 64, TTL, 10)}
		fill(groups, p.Restore)
		return p
	case SFMap:
		p := &sfmapPrefix{perGroup: perGroup, c: NewSFMapCache(nil)}
		fill(groups, p.Restore)
		return p
	}
	panic(fmt.Sprintf("bench: unknown library %q", lib))
}

func fill(groups int, restore func(int)) {
	for g := range groups {
		restore(g)
	}
}

// qcache: P is a struct whose fields are the key's segments, so a group is
// a key prefix.
type groupID struct{ Group, ID string }

type qcachePrefix struct {
	c        *qcache.Client
	q        *qcache.Query[groupID, string]
	perGroup int
}

func newQcachePrefix(groups, perGroup int) *qcachePrefix {
	c := qcache.NewClient()
	q := qcache.NewQueryFunc(c, qcache.Key{"items"}, func(_ context.Context, p groupID) (string, error) {
		return "v" + p.ID, nil
	}, qcache.StaleTime(qcache.Forever))
	p := &qcachePrefix{c: c, q: q, perGroup: perGroup}
	fill(groups, p.Restore)
	return p
}

func (p *qcachePrefix) id(group, id int) groupID {
	return groupID{Group: fmt.Sprintf("g%03d", group), ID: fmt.Sprintf("%07d", id)}
}

func (p *qcachePrefix) Invalidate(ctx context.Context, group int) (int, error) {
	err := p.c.Invalidate(ctx, qcache.Filter{
		Key:     qcache.Key{"items", fmt.Sprintf("g%03d", group)},
		Refetch: qcache.RefetchNone,
	})
	return p.perGroup, err
}

func (p *qcachePrefix) Restore(group int) {
	for i := range p.perGroup {
		k := p.id(group, i)
		p.q.SetData(k, "v"+k.ID)
	}
}

func (p *qcachePrefix) Fresh(group, id int) bool {
	s := p.q.State(p.id(group, id))
	return s.HasData && !s.IsStale
}

func (p *qcachePrefix) Close() { p.c.Close() }

type otterPrefix struct {
	c        *otter.Cache[string, string]
	perGroup int
}

func (p *otterPrefix) Invalidate(_ context.Context, group int) (int, error) {
	prefix, n := GroupPrefix(group), 0
	for k := range p.c.Keys() {
		if strings.HasPrefix(k, prefix) {
			p.c.Invalidate(k)
			n++
		}
	}
	return n, nil
}

func (p *otterPrefix) Restore(group int) {
	for i := range p.perGroup {
		k := PrefixKey(group, i)
		p.c.Set(k, "v"+k)
	}
}

func (p *otterPrefix) Fresh(group, id int) bool {
	_, ok := p.c.GetIfPresent(PrefixKey(group, id))
	return ok
}

func (p *otterPrefix) Close() { p.c.StopAllGoroutines() }

type sturdycPrefix struct {
	c        *sturdyc.Client[string]
	perGroup int
}

func (p *sturdycPrefix) Invalidate(_ context.Context, group int) (int, error) {
	prefix, n := GroupPrefix(group), 0
	for _, k := range p.c.ScanKeys() {
		if strings.HasPrefix(k, prefix) {
			p.c.Delete(k)
			n++
		}
	}
	return n, nil
}

func (p *sturdycPrefix) Restore(group int) {
	for i := range p.perGroup {
		k := PrefixKey(group, i)
		p.c.Set(k, "v"+k)
	}
}

func (p *sturdycPrefix) Fresh(group, id int) bool {
	_, ok := p.c.Get(PrefixKey(group, id))
	return ok
}

func (p *sturdycPrefix) Close() {}

type sfmapPrefix struct {
	c        *SFMapCache
	perGroup int
}

func (p *sfmapPrefix) Invalidate(_ context.Context, group int) (int, error) {
	prefix, n := GroupPrefix(group), 0
	p.c.M.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			p.c.M.Delete(k)
			n++
		}
		return true
	})
	return n, nil
}

func (p *sfmapPrefix) Restore(group int) {
	for i := range p.perGroup {
		k := PrefixKey(group, i)
		p.c.M.Store(k, "v"+k)
	}
}

func (p *sfmapPrefix) Fresh(group, id int) bool {
	_, ok := p.c.M.Load(PrefixKey(group, id))
	return ok
}

func (p *sfmapPrefix) Close() {}
