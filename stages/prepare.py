"""prepare: validate mnist.pkl.gz and write data/prepared/{train,valid,test}.pt (uint8, int64)."""

import argparse

from mnist_pipeline.data import prepare
from mnist_pipeline.errors import stage_main


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", required=True, help="the fetched mnist.pkl.gz")
    parser.add_argument("--out", required=True, help="folder for the prepared tensors")
    args = parser.parse_args()
    sizes = prepare(args.raw, args.out)
    print("prepare: " + ", ".join(f"{split} {n}" for split, n in sizes.items()))


if __name__ == "__main__":
    main()
