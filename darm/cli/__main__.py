import sys

from darm.cli import main

sys.exit(main())
