"""mmtlab.eval"""
