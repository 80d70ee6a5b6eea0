"""`python -m tricorn`: run the command line."""

from tricorn.main import main

if __name__ == "__main__":
    main(prog_name="tricorn")
