// Command imagebuild is `make images`: it builds weft's static binaries and
// writes one OCI image archive per image (package install/image) to
// <out>/<name>.tar, without a container daemon, then prints each image's
// reference, digest and size. The same tree, version, revision and
// SOURCE_DATE_EPOCH give the same digests.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/weftmesh/weft/install/image"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		out, binDir, chart string
		opts               image.Options
		only               []string
	)
	cmd := &cobra.Command{
		Use:           "imagebuild",
		Short:         "Build weft's OCI image archives without a container daemon",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			specs, err := selectSpecs(only)
			if err != nil {
				return err
			}
			if opts.Version == "" {
				if opts.Version, err = image.ChartAppVersion(chart); err != nil {
					return err
				}
			}
			if opts.Created, err = sourceDateEpoch(); err != nil {
				return err
			}
			if binDir == "" {
				binDir = filepath.Join(out, "bin")
			}
			opts.BinDir = binDir
			return run(ctx, cmd, out, specs, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "bin/images", "directory of the image archives")
	f.StringVar(&binDir, "bin-dir", "", "directory of the static binaries (default <out>/bin)")
	f.StringVar(&chart, "chart", "install/helm/weft", "Helm chart whose appVersion is the default version")
	f.StringVar(&opts.Registry, "registry", image.DefaultRegistry, "image name prefix (the chart's image.registry)")
	f.StringVar(&opts.Version, "version", "", "image tag and binaries' version (default: the chart's appVersion)")
	f.StringVar(&opts.Revision, "revision", "", "source revision label (org.opencontainers.image.revision), e.g. the git commit")
	f.StringSliceVar(&only, "only", nil, "build only these images (default: all)")
	return cmd
}

func run(ctx context.Context, cmd *cobra.Command, out string, specs []image.Spec, opts image.Options) error {
	start := time.Now()
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := image.GoBuild(ctx, ".", opts.BinDir, opts.Version, image.Packages(specs)...); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "built %d static binaries in %s (%.1fs)\n", len(image.Packages(specs)), opts.BinDir, time.Since(start).Seconds())
	// Images are independent and gzip is the cost: one per CPU.
	rows := make([]string, len(specs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for i, s := range specs {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			row, err := buildOne(s, opts, out)
			rows[i] = row
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tDIGEST\tSIZE\tARCHIVE")
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%d images in %.1fs (SIZE: compressed, as pushed)\n", len(specs), time.Since(start).Seconds())
	return nil
}

// buildOne builds the image of s, writes its archive to <out>/<name>.tar and
// returns its table row.
func buildOne(s image.Spec, opts image.Options, out string) (string, error) {
	img, err := image.Build(s, opts)
	if err != nil {
		return "", err
	}
	ref, err := opts.Ref(s)
	if err != nil {
		return "", err
	}
	path := filepath.Join(out, s.Name+".tar")
	if err := image.WriteArchiveFile(path, ref, img); err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("image %s: digest: %w", s.Name, err)
	}
	size, err := image.CompressedSize(img)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s", ref, digest, mib(size), path), nil
}

func selectSpecs(only []string) ([]image.Spec, error) {
	if len(only) == 0 {
		return image.Weft, nil
	}
	var specs []image.Spec
	for _, s := range image.Weft {
		if slices.Contains(only, s.Name) {
			specs = append(specs, s)
		}
	}
	if len(specs) != len(only) {
		return nil, fmt.Errorf("--only %v: weft's images are %v", only, names(image.Weft))
	}
	return specs, nil
}

func names(specs []image.Spec) []string {
	var n []string
	for _, s := range specs {
		n = append(n, s.Name)
	}
	return n
}

// sourceDateEpoch is $SOURCE_DATE_EPOCH (reproducible-builds.org), or the
// Unix epoch when unset.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since the Unix epoch", v)
	}
	return time.Unix(sec, 0).UTC(), nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
