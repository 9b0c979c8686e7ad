// placeholder until sampling lands
