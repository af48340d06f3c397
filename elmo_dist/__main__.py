import sys

from elmo_dist.cli import main

sys.exit(main())
