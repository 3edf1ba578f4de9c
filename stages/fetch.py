"""fetch: write data/raw/mnist.pkl.gz from the first source of sources.yaml that verifies."""

import argparse
from dataclasses import replace

from mnist_pipeline.errors import stage_main
from mnist_pipeline.fetch import fetch
from mnist_pipeline.params import load_params, load_sources


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--sources", default="sources.yaml", help="where to get it (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="where to write mnist.pkl.gz")
    args = parser.parse_args()
    config = replace(load_params(args.params).fetch, sources=load_sources(args.sources))
    source = fetch(config, args.out)
    print(f"fetch: {args.out} verified, from {source.describe()}")


if __name__ == "__main__":
    main()
