import sys

from earwitness.cli import main

sys.exit(main())
