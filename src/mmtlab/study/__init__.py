"""mmtlab.study"""
