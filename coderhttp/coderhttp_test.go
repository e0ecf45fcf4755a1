package coderhttp

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestJSONShape(t *testing.T) {
	for _, c := range []struct {
		in   Response
		want string
	}{
		{Response{Message: "Could not determine request Host."}, `{"message":"Could not determine request Host."}` + "\n"},
		{Response{Message: "m", Detail: "d"}, `{"message":"m","detail":"d"}` + "\n"},
		{Response{Message: "Invalid query parameters.", Validations: []ValidationError{{Field: "reconnect", Detail: "required"}}},
			`{"message":"Invalid query parameters.","validations":[{"field":"reconnect","detail":"required"}]}` + "\n"},
		// HTML characters escaped, as coderd's encoder does.
		{Response{Message: "<b>&"}, `{"message":"\u003cb\u003e\u0026"}` + "\n"},
	} {
		b, err := EncodeJSON(c.in)
		if err != nil || string(b) != c.want {
			t.Errorf("EncodeJSON(%+v) = %q, %v; want %q", c.in, b, err, c.want)
		}
	}
	rec := httptest.NewRecorder()
	WriteJSON(rec, http.StatusBadRequest, Response{Message: "no"})
	if rec.Code != http.StatusBadRequest || rec.Header().Get("Content-Type") != JSONContentType || rec.Body.String() != `{"message":"no"}`+"\n" {
		t.Errorf("WriteJSON: %d %v %q", rec.Code, rec.Header(), rec.Body)
	}
}

func TestPage(t *testing.T) {
	rec := httptest.NewRecorder()
	Page{
		Status:         http.StatusBadGateway,
		Title:          "Bad Gateway",
		Description:    "Failed to proxy <script>",
		AdditionalInfo: "try switching to HTTPS.",
		Retry:          true,
		Action:         &Action{URL: "https://8080s--a.apps.example.com", Text: "Switch to HTTPS"},
		DashboardURL:   "https://coder.example.com",
	}.Write(rec)
	body := rec.Body.String()
	if rec.Code != http.StatusBadGateway || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" ||
		rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers: %d %v", rec.Code, rec.Header())
	}
	for _, want := range []string{
		"<title>502 - Bad Gateway</title>", "<h2>502 Bad Gateway</h2>", "<h1>Bad Gateway</h1>",
		"Failed to proxy &lt;script&gt;", "<p>try switching to HTTPS.</p>",
		`<a href="https://8080s--a.apps.example.com">Switch to HTTPS</a>`, `<a href="">Retry</a>`,
		`<a href="https://coder.example.com">Back to site</a>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}

	body = string(Page{Status: http.StatusBadRequest, Title: "Head to the Dashboard", HideStatus: true, DashboardURL: "https://coder.example.com"}.HTML())
	if !strings.Contains(body, "<title>Head to the Dashboard</title>") || strings.Contains(body, "400") ||
		!strings.Contains(body, `<a href="https://coder.example.com">Head to the Dashboard</a>`) || strings.Contains(body, "Retry") {
		t.Errorf("hidden status page:\n%s", body)
	}
	if body := string(Page{Status: http.StatusNotFound, Title: "Application Not Found"}.HTML()); strings.Contains(body, "<a ") {
		t.Errorf("links without a dashboard URL:\n%s", body)
	}
}
