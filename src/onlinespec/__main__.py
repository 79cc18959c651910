import sys

from onlinespec.cli import main

sys.exit(main())
