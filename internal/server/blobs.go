package server

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/phr-project/phr/internal/blob"
	"github.com/phr-project/phr/internal/blob/s3"
)

// openBlobs opens the blob store the configuration names: the data
// directory's blobs/ by default, or S3-compatible object storage for
// --blob s3://bucket/prefix?endpoint=host:port (credentials from the
// environment).
func openBlobs(ctx context.Context, c Config) (blob.Store, error) {
	switch {
	case c.Blob == "":
		return blob.NewDir(filepath.Join(c.DataDir, "blobs"))
	case strings.HasPrefix(c.Blob, "s3://"):
		return s3.Open(ctx, c.Blob)
	}
	return nil, fmt.Errorf("--blob must be empty (files in the data directory) or s3://bucket/prefix?endpoint=host:port")
}
