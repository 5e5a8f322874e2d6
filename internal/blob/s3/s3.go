// Package s3 is a blob.Store in S3-compatible object storage (AWS S3,
// MinIO, versitygw, Ceph RGW...), for deployments whose replicas share
// blobs. It uses minio-go, a small, well-kept S3 client.
//
// The store is named by a URL:
//
//	s3://bucket/prefix?endpoint=host:port&region=us-east-1&insecure=true
//
// endpoint defaults to s3.amazonaws.com; insecure=true speaks plain HTTP
// (a local MinIO); path-style addressing is used unless the endpoint is
// AWS. Credentials never appear in the URL: they come from the
// environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
// AWS_SESSION_TOKEN, or MINIO_ROOT_USER / MINIO_ROOT_PASSWORD), the AWS
// credentials file, or the instance's IAM role.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/phr-project/phr/internal/blob"
)

// partSize is the multipart chunk for uploads of unknown size: the memory
// one upload buffers.
const partSize = 16 << 20

// Store is a blob.Store in one bucket under a key prefix.
type Store struct {
	c      *minio.Client
	bucket string
	prefix string
	// desc names the store for messages (no credentials).
	desc string
}

// Open parses an s3:// URL and connects (checking that the bucket exists).
func Open(ctx context.Context, rawURL string) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("blob store %q: want s3://bucket/prefix?endpoint=host:port", rawURL)
	}
	if u.User != nil {
		return nil, errors.New("blob store URL: put S3 credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, not in the URL")
	}
	q := u.Query()
	endpoint := q.Get("endpoint")
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	endpoint = strings.TrimPrefix(strings.TrimPrefix(endpoint, "https://"), "http://")
	secure := q.Get("insecure") != "true"
	lookup := minio.BucketLookupPath
	if strings.HasSuffix(endpoint, "amazonaws.com") {
		lookup = minio.BucketLookupAuto
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.FileAWSCredentials{}, &credentials.IAM{},
	})
	c, err := minio.New(endpoint, &minio.Options{Creds: creds, Secure: secure, Region: q.Get("region"), BucketLookup: lookup})
	if err != nil {
		return nil, fmt.Errorf("blob store s3://%s: %w", u.Host, err)
	}
	s := &Store{c: c, bucket: u.Host, prefix: strings.Trim(u.Path, "/"), desc: "s3://" + u.Host + u.Path}
	ok, err := c.BucketExists(ctx, s.bucket)
	if err != nil {
		return nil, fmt.Errorf("blob store %s at %s: %w", s.desc, endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("blob store %s: bucket %q does not exist at %s", s.desc, s.bucket, endpoint)
	}
	return s, nil
}

// String names the store (without credentials).
func (s *Store) String() string { return s.desc }

func (s *Store) key(k string) (string, error) {
	if !blob.ValidKey(k) {
		return "", fmt.Errorf("invalid blob key %q", k)
	}
	if s.prefix == "" {
		return k, nil
	}
	return s.prefix + "/" + k, nil
}

// countingReader counts what an upload read.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Put implements blob.Store. The object appears only when the upload
// completes (a multipart upload that fails is aborted), so readers never
// see a partial blob.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	k, err := s.key(key)
	if err != nil {
		return 0, err
	}
	cr := &countingReader{r: r}
	info, err := s.c.PutObject(ctx, s.bucket, k, cr, -1, minio.PutObjectOptions{PartSize: partSize, ContentType: "application/octet-stream"})
	if err != nil {
		return 0, fmt.Errorf("put blob %s: %w", key, err)
	}
	if info.Size > 0 {
		return info.Size, nil
	}
	return cr.n, nil
}

// Get implements blob.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	k, err := s.key(key)
	if err != nil {
		return nil, 0, err
	}
	obj, err := s.c.GetObject(ctx, s.bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("get blob %s: %w", key, err)
	}
	st, err := obj.Stat()
	if err != nil {
		obj.Close()
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, 0, fmt.Errorf("%w: %s", blob.ErrNotFound, key)
		}
		return nil, 0, fmt.Errorf("get blob %s: %w", key, err)
	}
	return obj, st.Size, nil
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.key(key)
	if err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.bucket, k, minio.RemoveObjectOptions{}); err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
		return fmt.Errorf("delete blob %s: %w", key, err)
	}
	return nil
}

var _ blob.Store = (*Store)(nil)
