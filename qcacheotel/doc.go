// Package qcacheotel traces the fetches of qcache clients and records their
// metrics with OpenTelemetry.
//
// Each fetch gets a span, "qcache.fetch <query name>", a child of the span
// in the context of the call that started it (a fetch carries the values
// of that context; callers that join a fetch in flight share the
// starter's), with the query name, the key, the attempts, the outcome and
// the last HTTP status as attributes, and an event per retry. The fetch
// function runs in the span's context, so that an HTTP client span made by
// otelhttp nests under it. Metrics mirror those of qcacheprom: counters,
// gauges and a histogram of fetch durations, by query name.
//
//	tel, err := qcacheotel.New() // the global tracer and meter providers
//	if err != nil {
//		return err
//	}
//	defer tel.Close()
//	client := qcache.NewClient(
//		qcache.WithBaseURL("https://api.example.com"),
//		qcache.WithHTTPClient(&http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport)}),
//		qcache.WithHooks(tel.Hooks()),
//	)
//	defer client.Close()
//	tel.Watch(client)
//
// Metric attributes are bounded: the query name (qcache.QueryName), the
// outcome, the reason, the event kind; a key is a span attribute only.
//
// It is a sub-module, github.com/qcache-go/qcache/qcacheotel, so that the
// root module does not depend on OpenTelemetry.
package qcacheotel
