"""A small English stop-word list (function words, pronouns, auxiliaries) for SuperClass's optional filter."""

STOPWORDS = frozenset("""
a an the and or but nor so yet if then than because as of at by for from in into onto on off out over under
up down to with without within about above below between through during before after again further once
here there when where why how all any both each few more most other some such no not only own same too very
can could will would shall should may might must do does did doing done have has had having be is am are was
were been being i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
himself she her hers herself it its itself they them their theirs themselves what which who whom whose this
that these those just also s t d ll m re ve n't 's 're 've 'll 'm 'd while until against per via
""".split())
