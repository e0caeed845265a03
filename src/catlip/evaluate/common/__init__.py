"""What every evaluation family shares: the model under evaluation (``model``), labelled data and class lists
(``datasets``, ``class_files``), frozen features (``features``), metrics, prompt templates and the command-line
flags and printing the tasks have in common (``cli``). Nothing here is a task, and nothing here imports a family."""
