import sys

from sgvis.cli import main

sys.exit(main())
