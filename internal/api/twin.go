package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/fieldhub/fieldhub/internal/twin"
)

// maxTwinBody bounds a PATCH body: twice the document limit leaves room
// for nulls that remove keys.
const maxTwinBody = 2 * twin.MaxDocBytes

// Twins is what the API needs of the twin service.
type Twins interface {
	Get(ctx context.Context, device string) (twin.View, error)
	// PatchDesired merges patch into the desired state, only at version
	// ifVersion when it is ≥ 0.
	PatchDesired(ctx context.Context, device string, patch []byte, ifVersion int64) (twin.View, error)
}

// getTwin serves GET /api/v1/devices/{id}/twin; the ETag is the desired
// version.
func (a *API) getTwin(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.o.Registry.Get(r.Context(), id); err != nil {
		a.storeError(w, err)
		return
	}
	v, err := a.o.Twins.Get(r.Context(), id)
	if err != nil {
		a.storeError(w, err)
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(v.Desired.Version, 10)))
	writeJSON(w, http.StatusOK, v)
}

// patchTwin serves PATCH /api/v1/devices/{id}/twin with
// {"desired": {merge patch}, "version": n?} and an optional
// If-Match: "n".
func (a *API) patchTwin(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ifVersion, err := ifMatchVersion(r.Header.Get("If-Match"))
	if err != nil {
		a.storeError(w, err)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "application/merge-patch+json") {
		a.storeError(w, badRequest("content type %q is not application/json", ct))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxTwinBody+1))
	if err != nil {
		a.storeError(w, badRequest("reading the body: %v", err))
		return
	}
	if len(body) > maxTwinBody {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("the body is over %d bytes (%d KiB); a twin document is at most %d bytes (%d KiB)", maxTwinBody, maxTwinBody>>10, twin.MaxDocBytes, twin.MaxDocBytes>>10))
		return
	}
	var req struct {
		Desired json.RawMessage `json:"desired"`
		Version *int64          `json:"version"`
	}
	if err := decodeStrict(body, &req); err != nil {
		a.storeError(w, err)
		return
	}
	if len(req.Desired) == 0 || string(req.Desired) == "null" {
		a.storeError(w, badRequest(`desired: want a JSON object (a merge patch of the desired state), e.g. {"desired":{"interval":10}}`))
		return
	}
	if req.Version != nil {
		if *req.Version < 0 {
			a.storeError(w, badRequest("version: %d is negative", *req.Version))
			return
		}
		if ifVersion >= 0 && ifVersion != *req.Version {
			a.storeError(w, badRequest("If-Match %d and version %d disagree", ifVersion, *req.Version))
			return
		}
		ifVersion = *req.Version
	}
	if _, err := a.o.Registry.Get(r.Context(), id); err != nil {
		a.storeError(w, err)
		return
	}
	v, err := a.o.Twins.PatchDesired(r.Context(), id, req.Desired, ifVersion)
	switch {
	case errors.Is(err, twin.ErrVersionMismatch):
		writeError(w, http.StatusPreconditionFailed, "version_mismatch", err.Error())
		return
	case errors.Is(err, twin.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
		return
	case errors.Is(err, twin.ErrInvalid):
		writeError(w, http.StatusBadRequest, "invalid", err.Error())
		return
	case err != nil:
		a.storeError(w, err)
		return
	}
	a.o.Logger.Info("desired twin changed", "device", id, "version", v.Desired.Version)
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(v.Desired.Version, 10)))
	writeJSON(w, http.StatusOK, v)
}

// ifMatchVersion reads an If-Match header holding a desired version: 3,
// "3" or W/"3"; -1 when absent.
func ifMatchVersion(h string) (int64, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return -1, nil
	}
	h = strings.TrimPrefix(h, "W/")
	h = strings.Trim(h, `"`)
	v, err := strconv.ParseInt(h, 10, 64)
	if err != nil || v < 0 {
		return 0, badRequest("If-Match: want the desired version (e.g. \"3\"), got %q", h)
	}
	return v, nil
}
