from darm.entry import main

main()
