"""``python -m embedtrain`` (and ``accelerate launch -m embedtrain``)."""

from embedtrain.cli import main

if __name__ == "__main__":
    main()
