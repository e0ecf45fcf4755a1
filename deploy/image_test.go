package deploy

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/wsedge/wsedge/internal/testutil"
)

// imageUID is the user the image runs as (distroless's nonroot).
const imageUID = 65532

// imageVersion is stamped into the image the test builds.
const imageVersion = "v0.0.0-image-test"

// ociImageConfig is the part of an OCI image configuration the test reads.
type ociImageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User         string              `json:"User"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

type ociDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
}

type ociIndex struct {
	Manifests []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	Config ociDescriptor   `json:"config"`
	Layers []ociDescriptor `json:"layers"`
}

// imageBuilder is podman, else buildah, or "" when neither is installed.
func imageBuilder() string {
	for _, b := range []string{"podman", "buildah"} {
		if p, err := exec.LookPath(b); err == nil {
			return p
		}
	}
	return ""
}

// TestImage builds the container image the way `make image` does — podman
// (or buildah) from deploy/Containerfile.local and the binaries built here,
// no registry involved — into a temporary container storage, exports it as
// an OCI archive, and checks what a registry would get: the configuration
// matches deploy/Dockerfile's (entrypoint, command, user 65532, exposed
// ports), the binaries are static and built with the Makefile's tags, the
// CA bundle and the nonroot user are there, and the entrypoint run from the
// image's own filesystem (chrooted into it as uid 65532 when the test runs
// as root) prints its version and an Envoy bootstrap the real Envoy accepts.
func TestImage(t *testing.T) {
	builder := imageBuilder()
	if builder == "" {
		t.Skip("neither podman nor buildah is installed, so the image is not built: run make image-builder (as root), or make setup")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed: the image is built by make image")
	}
	root := testutil.RepoRoot(t)
	tmp := t.TempDir()
	// A storage of its own, removed with the test: vfs works everywhere
	// (overlay needs kernel support that containers often lack), and the
	// image is one small layer.
	storage := []string{"--root", filepath.Join(tmp, "storage"), "--runroot", filepath.Join(tmp, "run"), "--storage-driver", "vfs"}
	if path.Base(builder) == "podman" {
		storage = append(storage, "--cgroup-manager", "cgroupfs", "--events-backend", "none")
	}
	tag := "localhost/wsedge-image-test:" + imageVersion
	buildContext := filepath.Join(tmp, "context")
	mk := exec.Command("make", "--no-print-directory", "image",
		"IMAGE="+tag, "IMAGE_BUILDER="+builder, "IMAGE_BUILDER_FLAGS="+strings.Join(storage, " "),
		"IMAGE_CONTEXT="+buildContext, "VERSION="+imageVersion)
	mk.Dir = root
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	archive := filepath.Join(tmp, "image.tar")
	var export *exec.Cmd
	if path.Base(builder) == "podman" {
		export = exec.Command(builder, slices.Concat(storage, []string{"save", "--format", "oci-archive", "-o", archive, tag})...)
	} else {
		export = exec.Command(builder, slices.Concat(storage, []string{"push", tag, "oci-archive:" + archive})...)
	}
	if out, err := export.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", export, err, out)
	}
	rootfs := filepath.Join(tmp, "rootfs")
	cfg, err := unpackOCIArchive(archive, rootfs)
	if err != nil {
		t.Fatalf("image %s: %v", tag, err)
	}

	// The configuration is deploy/Dockerfile's.
	want := readDockerfile(t)
	local := readContainerfile(t, "Containerfile.local")
	for _, d := range []dockerfile{want, local} {
		if d.User != fmt.Sprintf("%d:%d", imageUID, imageUID) {
			t.Errorf("USER %q, want %d:%d", d.User, imageUID, imageUID)
		}
	}
	ic := cfg.Config
	if ic.User != want.User {
		t.Errorf("image user %q, deploy/Dockerfile's %q", ic.User, want.User)
	}
	if !slices.Equal(ic.Entrypoint, want.Entrypoint) || !slices.Equal(ic.Cmd, want.Cmd) {
		t.Errorf("image entrypoint %q cmd %q, deploy/Dockerfile's %q %q", ic.Entrypoint, ic.Cmd, want.Entrypoint, want.Cmd)
	}
	var ports []string
	for p := range ic.ExposedPorts {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	if wantPorts := slices.Sorted(slices.Values(want.Expose)); len(wantPorts) == 0 || !slices.Equal(ports, wantPorts) {
		t.Errorf("image exposes %q, deploy/Dockerfile %q", ports, wantPorts)
	}
	if cfg.OS != "linux" {
		t.Errorf("image os %q", cfg.OS)
	}

	// The binaries: static, built with the Makefile's tags.
	tags := makefileVar(t, root, "GOTAGS")
	for _, bin := range []string{"wsedge", "wsedge-probe"} {
		p := filepath.Join(rootfs, bin)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("/%s is not an executable in the image (%v)", bin, err)
			continue
		}
		if err := checkStatic(p); err != nil {
			t.Errorf("/%s: %v", bin, err)
		}
		out, err := exec.Command("go", "version", "-m", p).Output()
		if err != nil {
			t.Fatalf("go version -m /%s: %v", bin, err)
		}
		if !bytes.Contains(out, []byte("CGO_ENABLED=0")) || !bytes.Contains(out, []byte("-trimpath=true")) {
			t.Errorf("/%s is not a CGO_ENABLED=0 -trimpath build:\n%s", bin, out)
		}
		if bin == "wsedge" && !regexp.MustCompile(`(?m)^\s+build\s+-tags=`+regexp.QuoteMeta(tags)+`$`).Match(out) {
			t.Errorf("/wsedge is not built with the Makefile's tags %q:\n%s", tags, out)
		}
	}

	// What a static Go binary takes from the filesystem: CA certificates
	// (crypto/x509 reads this path on Debian-like systems) and the user.
	pem, err := os.ReadFile(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt"))
	if err != nil || !x509.NewCertPool().AppendCertsFromPEM(pem) {
		t.Errorf("the image has no usable CA bundle at /etc/ssl/certs/ca-certificates.crt (%v)", err)
	}
	passwd, err := os.ReadFile(filepath.Join(rootfs, "etc/passwd"))
	if err != nil || !regexp.MustCompile(fmt.Sprintf(`(?m)^nonroot:x:%d:%d:`, imageUID, imageUID)).Match(passwd) {
		t.Errorf("/etc/passwd does not name uid %d: %q (%v)", imageUID, passwd, err)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("/tmp is not a world-writable sticky directory (%v)", err)
	}

	// The entrypoint, run from the image's filesystem.
	entry := ic.Entrypoint
	if len(entry) == 0 {
		t.Fatal("no entrypoint")
	}
	uid, gid, err := numericUser(ic.User)
	if err != nil {
		t.Fatalf("image user: %v", err)
	}
	run := func(args ...string) ([]byte, error) { return runInImage(t, rootfs, uid, gid, entry, args...) }
	out, err := run("version")
	if err != nil || !strings.HasPrefix(string(out), "wsedge "+imageVersion+" ") {
		t.Errorf("%q version = %q (%v), want wsedge %s …", entry, out, err, imageVersion)
	}
	base := envoyConfigAt(t, "kubernetes/base/envoy-config.yaml")
	out, err = run(append([]string{"envoy-config"}, base.Args...)...)
	if err != nil {
		t.Fatalf("%q envoy-config: %v\n%s", entry, err, out)
	}
	// The checked-in bootstrap is this output behind its two comment lines.
	if _, body, _ := strings.Cut(string(base.Body), regenerateHint); body != string(out) {
		t.Errorf("the image's envoy-config differs from kubernetes/base/envoy-config.yaml")
	}
	certFile, keyFile := testutil.SelfSignedCert(t, "proxy.example.com", "*.apps.example.com")
	out = bytes.ReplaceAll(out, []byte(base.Config.TLSCertFile), []byte(certFile))
	out = bytes.ReplaceAll(out, []byte(base.Config.TLSKeyFile), []byte(keyFile))
	if vout, err := testutil.ValidateEnvoyConfig(t, out); err != nil {
		t.Errorf("the bootstrap from the image's envoy-config: real Envoy refuses it: %v\n%s", err, vout)
	}
}

// envoyConfigAt is the checked-in bootstrap at p (relative to deploy/).
func envoyConfigAt(t *testing.T, p string) envoyConfigFile {
	t.Helper()
	for _, f := range findEnvoyConfigs(t) {
		if f.Path == p {
			return f
		}
	}
	t.Fatalf("%s: no checked-in bootstrap there", p)
	return envoyConfigFile{}
}

// numericUser parses an image's "uid:gid" user.
func numericUser(u string) (uid, gid uint32, err error) {
	us, gs, ok := strings.Cut(u, ":")
	a, err1 := strconv.ParseUint(us, 10, 32)
	b, err2 := strconv.ParseUint(gs, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%q is not a numeric uid:gid", u)
	}
	return uint32(a), uint32(b), nil
}

// runInImage runs argv from the unpacked image root. As root it runs the
// way a container would: chrooted into the image as uid:gid, with an
// empty environment, so a binary that needed anything outside the image
// (a dynamic loader, a library) would fail. Otherwise it runs the file
// from the image directly.
func runInImage(t *testing.T, rootfs string, uid, gid uint32, entry []string, args ...string) ([]byte, error) {
	t.Helper()
	argv := slices.Concat(entry, args)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// Path is resolved inside the chroot (exec.Command would look it
		// up on this machine).
		cmd = &exec.Cmd{Path: argv[0], Args: argv, Dir: "/", Env: []string{}}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Chroot:     rootfs,
			Credential: &syscall.Credential{Uid: uid, Gid: gid},
		}
	} else {
		t.Logf("not root: running %s from %s without chroot", argv[0], rootfs)
		cmd = exec.Command(filepath.Join(rootfs, argv[0]), argv[1:]...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, stderr.Bytes())
	}
	return out, nil
}

// checkStatic fails for an ELF file that asks for a dynamic loader.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (has an ELF interpreter)")
		}
	}
	return nil
}

// makefileVar is the value of a `NAME := value` line of the Makefile.
func makefileVar(t *testing.T, root, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*:=\s*(.*?)\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("Makefile sets no %s", name)
	}
	return string(m[1])
}

// unpackOCIArchive reads an OCI image archive (oci-layout, index.json,
// blobs/), unpacks the layers of its one image into dir and returns the
// image's configuration.
func unpackOCIArchive(archive, dir string) (ociImageConfig, error) {
	var cfg ociImageConfig
	blobs := map[string]string{} // "sha256:…" -> file extracted from the archive
	bdir, err := os.MkdirTemp(filepath.Dir(archive), "blobs")
	if err != nil {
		return cfg, err
	}
	var index []byte
	f, err := os.Open(archive)
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return cfg, fmt.Errorf("archive: %w", err)
		}
		name := path.Clean(h.Name)
		switch {
		case name == "index.json":
			if index, err = io.ReadAll(tr); err != nil {
				return cfg, err
			}
		case h.Typeflag == tar.TypeReg && strings.HasPrefix(name, "blobs/"):
			alg, hex, ok := strings.Cut(strings.TrimPrefix(name, "blobs/"), "/")
			if !ok {
				continue
			}
			p := filepath.Join(bdir, alg+"-"+hex)
			if err := writeFile(p, tr, 0o600); err != nil {
				return cfg, err
			}
			blobs[alg+":"+hex] = p
		}
	}
	var idx ociIndex
	if err := json.Unmarshal(index, &idx); err != nil {
		return cfg, fmt.Errorf("index.json: %w", err)
	}
	if len(idx.Manifests) != 1 {
		return cfg, fmt.Errorf("index.json: %d manifests, want 1", len(idx.Manifests))
	}
	var m ociManifest
	if err := readJSONBlob(blobs, idx.Manifests[0].Digest, &m); err != nil {
		return cfg, fmt.Errorf("manifest: %w", err)
	}
	if err := readJSONBlob(blobs, m.Config.Digest, &cfg); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if len(m.Layers) == 0 || len(m.Layers) != len(cfg.RootFS.DiffIDs) {
		return cfg, fmt.Errorf("%d layers, %d diff IDs", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	for _, l := range m.Layers {
		p, ok := blobs[l.Digest]
		if !ok {
			return cfg, fmt.Errorf("layer %s is not in the archive", l.Digest)
		}
		if err := unpackLayer(p, l.MediaType, dir); err != nil {
			return cfg, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	}
	return cfg, nil
}

func readJSONBlob(blobs map[string]string, digest string, v any) error {
	p, ok := blobs[digest]
	if !ok {
		return fmt.Errorf("blob %s is not in the archive", digest)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// unpackLayer extracts one layer (a tar, possibly gzip-compressed) into dir.
// Whiteouts delete what earlier layers put there.
func unpackLayer(blob, mediaType, dir string) error {
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	switch {
	case strings.HasSuffix(mediaType, "+gzip") || strings.HasSuffix(mediaType, ".gzip"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(mediaType, ".tar") || strings.HasSuffix(mediaType, ".tar.v1"):
	default:
		return fmt.Errorf("media type %q is not a tar or gzip layer", mediaType)
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean("/" + h.Name)[1:]
		if name == "" {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if base := path.Base(name); strings.HasPrefix(base, ".wh.") {
			if base == ".wh..wh..opq" {
				continue
			}
			if err := os.RemoveAll(filepath.Join(filepath.Dir(target), strings.TrimPrefix(base, ".wh."))); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(h.Mode).Perm()
		if h.Mode&04000 != 0 {
			mode |= os.ModeSetuid
		}
		if h.Mode&01000 != 0 {
			mode |= os.ModeSticky
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(target, mode); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := writeFile(target, tr, mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.Remove(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		case tar.TypeLink:
			os.Remove(target)
			if err := os.Link(filepath.Join(dir, filepath.FromSlash(path.Clean("/" + h.Linkname)[1:])), target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected tar entry type %c", h.Name, h.Typeflag)
		}
	}
}

func writeFile(p string, r io.Reader, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}
